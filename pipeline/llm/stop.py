"""Why an answer ended, read before anything parses it.

A model answer is only an answer when the model finished it. Gemini says why it stopped in
`candidates[0].finishReason` and, for a prompt it refused to read, in
`promptFeedback.blockReason` with no candidates at all (GEMINI.md §3.3; field cases 08, 09;
instructor#2232 checks finish_reason before parsing for the same reason). Three kinds:

- COMPLETE (`STOP`): parse and validate it;
- TRUNCATED (`MAX_TOKENS`): cut at maxOutputTokens, or thinking used the whole budget; a
  repair prompt with the same cap is cut again, so the remedy is a larger output budget or
  a smaller input — never a repair call;
- BLOCKED (a block reason, no candidate, or any other finish reason: `SAFETY`,
  `RECITATION`, `PROHIBITED_CONTENT`, `BLOCKLIST`, `SPII`, `OTHER`, ...): the same request
  meets the same refusal, so the document fails for good, naming the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from pipeline.errors import AnswerBlocked, AnswerInvalid, AnswerTruncated, UnusableAnswer
from pipeline.llm.attempts import Outcome
from pipeline.llm.provider import LLMRequest, LLMResponse, Usage

# A caller's check of a finished answer: None to use it, else what is wrong with it.
Accept = Callable[[LLMResponse], str | None]


class AnswerKind(StrEnum):
    COMPLETE = "complete"
    TRUNCATED = "truncated"
    BLOCKED = "blocked"


@dataclass(frozen=True)
class Stop:
    """How one answer ended: its kind and the provider's own reason code."""

    kind: AnswerKind
    reason: str  # e.g. "STOP", "MAX_TOKENS", "SAFETY", "blockReason PROHIBITED_CONTENT"

    def describe(self) -> str:
        """A phrase for messages: 'stopped for SAFETY', 'prompt blocked (PROHIBITED_CONTENT)'."""
        if self.reason.startswith("blockReason "):
            return f"prompt blocked ({self.reason.removeprefix('blockReason ')})"
        if self.reason == "NO_CANDIDATES":
            return "no answer (the response had no candidates)"
        return f"stopped for {self.reason}"


def classify(response: LLMResponse) -> Stop:
    """The kind of `response`, from its block reason and finish reason alone."""
    if response.block_reason:
        return Stop(AnswerKind.BLOCKED, f"blockReason {response.block_reason}")
    reason = response.finish_reason
    if reason is None:
        return Stop(AnswerKind.BLOCKED, "NO_CANDIDATES")
    if reason == "STOP":
        return Stop(AnswerKind.COMPLETE, reason)
    if reason == "MAX_TOKENS":
        return Stop(AnswerKind.TRUNCATED, reason)
    return Stop(AnswerKind.BLOCKED, reason)


@dataclass(frozen=True)
class Verdict:
    """What becomes of one paid answer: OK (use and store it) or an unused outcome
    (TRUNCATED, BLOCKED, INVALID) with the error to raise and to write on its ledger row."""

    outcome: Outcome
    error: UnusableAnswer | None = None


def accepted(accept: Accept | None, response: LLMResponse) -> str | None:
    """`accept`'s verdict on `response`; a check that raises refuses the answer (with why)
    rather than losing a paid answer to an exception."""
    if accept is None:
        return None
    try:
        return accept(response)
    except Exception as exc:
        return f"the answer could not be checked ({type(exc).__name__}: {exc})"


def judge(
    request: LLMRequest, response: LLMResponse, usage: Usage, accept: Accept | None
) -> Verdict:
    """Classify `response` by its stop reason, and only a finished one by `accept`.

    `usage` is what is booked for it (thinking tokens say whether thinking ate the budget).
    """
    stop = classify(response)
    if stop.kind is AnswerKind.TRUNCATED:
        cap = request.max_output_tokens
        thinking = f", {usage.thinking_tokens} of them thinking" if usage.thinking_tokens else ""
        return Verdict(Outcome.TRUNCATED, AnswerTruncated(
            f"answer truncated at max_output_tokens={cap} (finishReason MAX_TOKENS{thinking})",
            max_output_tokens=cap,
            thoughts_tokens=usage.thinking_tokens,
        ))  # fmt: skip
    if stop.kind is AnswerKind.BLOCKED:
        return Verdict(Outcome.BLOCKED, AnswerBlocked(
            f"the model gave no usable answer: {stop.describe()}; the same request would be "
            "refused again, so the document is not retried",
            stop_reason=stop.reason,
        ))  # fmt: skip
    problem = accepted(accept, response)
    if problem is not None:
        error = AnswerInvalid(f"the answer failed validation: {problem}", response.text, problem)
        return Verdict(Outcome.INVALID, error)
    return Verdict(Outcome.OK)
