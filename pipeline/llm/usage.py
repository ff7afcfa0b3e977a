"""What to book for an answer whose provider left usage out: the call's bound, never zero.

A billed answer without usageMetadata (or with only totalTokenCount) happens in the field
(case 10: openclaw#51743, haystack-core-integrations#1195). Booking it as 0 tokens would
make the ledger and the budgets say the call was free. So:

- input tokens come from promptTokenCount, else from the exact countTokens figure the
  reservation was made with;
- output (answer + thoughts) comes from candidatesTokenCount/thoughtsTokenCount, else from
  totalTokenCount minus the input, else from the request's output bound (maxOutputTokens +
  thinking budget) — the most the answer can have been billed;
- tokens that totalTokenCount shows but no field explains are booked as thinking (billed at
  the output rate, the higher one), so a total never books less than it says.

Google's JSON omits zero-valued fields, so a missing candidatesTokenCount on an answer with
no text (a blocked prompt) is a zero, not a gap.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.llm.provider import ReportedUsage, Usage


@dataclass(frozen=True)
class BookedUsage:
    """The usage to book and whether any of it was filled in rather than reported."""

    usage: Usage
    missing: tuple[str, ...] = ()  # usageMetadata field names the provider left out

    @property
    def usage_missing(self) -> bool:
        return bool(self.missing)


def book_usage(
    reported: ReportedUsage | None,
    fallback: Usage,
    *,
    counted_input_tokens: int,
    output_bound_tokens: int,
    answered: bool,
) -> BookedUsage:
    """The usage to book for one answer.

    `reported` is None for providers whose `fallback` usage is complete (offline, tests);
    `counted_input_tokens` is the countTokens figure for the request; `output_bound_tokens`
    is `LLMRequest.output_bound_tokens`; `answered` says whether any answer text came back.
    """
    if reported is None:
        return BookedUsage(fallback)
    if not reported.present:
        usage = Usage(input_tokens=counted_input_tokens, output_tokens=output_bound_tokens)
        return BookedUsage(usage, ("usageMetadata",))
    missing: list[str] = []
    tool = reported.tool_use or 0
    if reported.prompt is not None:
        input_tokens = reported.prompt + tool
    else:
        input_tokens = counted_input_tokens + tool
        missing.append("promptTokenCount")
    thoughts = reported.thoughts or 0
    if reported.candidates is not None:
        output = reported.candidates
    elif reported.total is not None:
        output = max(0, reported.total - input_tokens - thoughts)
        if output:
            missing.append("candidatesTokenCount")
    elif answered:
        output = max(0, output_bound_tokens - thoughts)
        missing.append("candidatesTokenCount")
    else:
        output = 0
    if reported.total is not None:
        unexplained = reported.total - (input_tokens + output + thoughts)
        if unexplained > 0:
            thoughts += unexplained
            missing.append("thoughtsTokenCount")
    cached = min(reported.cached or 0, input_tokens)
    usage = Usage(input_tokens=input_tokens, output_tokens=output, thinking_tokens=thoughts,
                  cached_tokens=cached)  # fmt: skip
    return BookedUsage(usage, tuple(missing))
