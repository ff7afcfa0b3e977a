"""The rules that decide what a paid answer is and what it is booked at: stop reasons
(stop.py), usage the provider left out (usage.py), and the failure policy for each."""

from __future__ import annotations

import pytest

from pipeline.errors import (
    AnswerBlocked,
    AnswerInvalid,
    AnswerMalformed,
    AnswerTruncated,
    BadDocument,
    OverBudget,
    Permanent,
    Reason,
    Retry,
)
from pipeline.errors import BudgetExceeded as BE
from pipeline.failure_policy import failed_call
from pipeline.llm.attempts import Outcome
from pipeline.llm.provider import LLMRequest, LLMResponse, Part, ReportedUsage, Usage
from pipeline.llm.stop import AnswerKind, classify, judge
from pipeline.llm.usage import book_usage

REQUEST = LLMRequest(model="m", parts=(Part(text="x"),), max_output_tokens=100,
                     thinking_budget=20)  # fmt: skip


def _answer(text: str = "{}", finish: str | None = "STOP", block: str | None = None) -> LLMResponse:
    return LLMResponse(text=text, usage=Usage(), model_version="m", latency_s=0.0,
                       finish_reason=finish, block_reason=block)  # fmt: skip


@pytest.mark.parametrize(
    ("finish", "block", "kind"),
    [
        ("STOP", None, AnswerKind.COMPLETE),
        ("MAX_TOKENS", None, AnswerKind.TRUNCATED),
        *[(r, None, AnswerKind.BLOCKED) for r in ("SAFETY", "RECITATION", "PROHIBITED_CONTENT",
                                                  "BLOCKLIST", "SPII", "OTHER", "LANGUAGE")],
        (None, None, AnswerKind.BLOCKED),  # no candidates at all
        (None, "PROHIBITED_CONTENT", AnswerKind.BLOCKED),
        ("STOP", "OTHER", AnswerKind.BLOCKED),  # a block reason wins over any finish reason
    ],
)
def test_every_stop_reason_has_a_kind(finish: str | None, block: str | None,
                                      kind: AnswerKind) -> None:  # fmt: skip
    assert classify(_answer(finish=finish, block=block)).kind is kind


def test_judge_checks_only_finished_answers_and_names_the_cap() -> None:
    checked: list[str] = []

    def accept(response: LLMResponse) -> str | None:
        checked.append(response.text)
        return None if response.text == "{}" else "not JSON"

    usage = Usage(thinking_tokens=100)
    cut = judge(REQUEST, _answer('{"a": ', "MAX_TOKENS"), usage, accept)
    assert cut.outcome is Outcome.TRUNCATED and isinstance(cut.error, AnswerTruncated)
    assert "answer truncated at max_output_tokens=100" in str(cut.error)
    assert "100 of them thinking" in str(cut.error)
    blocked = judge(REQUEST, _answer("", None, "SAFETY"), Usage(), accept)
    assert blocked.outcome is Outcome.BLOCKED and isinstance(blocked.error, AnswerBlocked)
    assert "prompt blocked (SAFETY)" in str(blocked.error)
    assert checked == []  # an unfinished answer is never parsed
    bad = judge(REQUEST, _answer("nope"), Usage(), accept)
    assert bad.outcome is Outcome.INVALID and isinstance(bad.error, AnswerInvalid)
    assert bad.error.text == "nope" and bad.error.problem == "not JSON"
    assert judge(REQUEST, _answer("{}"), Usage(), accept).outcome is Outcome.OK

    def broken(response: LLMResponse) -> str | None:
        raise KeyError("summary")

    refused = judge(REQUEST, _answer("{}"), Usage(), broken)
    assert refused.outcome is Outcome.INVALID  # a check that raises never loses the answer


BOUND = REQUEST.output_bound_tokens  # 100 + 20


@pytest.mark.parametrize(
    ("reported", "answered", "booked", "missing"),
    [
        # complete usage: booked as reported
        (ReportedUsage(True, prompt=50, candidates=10, thoughts=5, total=65), True,
         Usage(50, 10, 5), ()),
        # Google omits zero fields: no thoughts on a plain answer, no candidates when blocked
        (ReportedUsage(True, prompt=50, candidates=10, total=60), True, Usage(50, 10, 0), ()),
        (ReportedUsage(True, prompt=50, total=50), False, Usage(50, 0, 0), ()),
        # no usageMetadata at all: the counted input and the whole output bound
        (ReportedUsage(False), True, Usage(40, BOUND, 0), ("usageMetadata",)),
        # only totalTokenCount: input from the count, the rest of the total is output
        (ReportedUsage(True, total=55), True, Usage(40, 15, 0),
         ("promptTokenCount", "candidatesTokenCount")),
        # prompt and thoughts but no candidates on an answer: the rest of the bound
        (ReportedUsage(True, prompt=50, thoughts=30), True, Usage(50, BOUND - 30, 30),
         ("candidatesTokenCount",)),
        # a total larger than the parts explain: the difference is booked as thinking
        (ReportedUsage(True, prompt=50, candidates=10, total=90), True, Usage(50, 10, 30),
         ("thoughtsTokenCount",)),
    ],
)  # fmt: skip
def test_usage_is_never_booked_below_what_the_call_can_have_cost(
    reported: ReportedUsage, answered: bool, booked: Usage, missing: tuple[str, ...]
) -> None:
    result = book_usage(reported, Usage(), counted_input_tokens=40,
                        output_bound_tokens=BOUND, answered=answered)  # fmt: skip
    assert result.usage == booked
    assert result.missing == missing
    assert result.usage_missing is bool(missing)


def test_a_provider_without_reported_usage_is_booked_as_it_says() -> None:
    exact = Usage(7, 3, 1)
    assert book_usage(None, exact, counted_input_tokens=0, output_bound_tokens=9,
                      answered=True).usage == exact  # fmt: skip


@pytest.mark.parametrize(
    ("error", "kind", "reason"),
    [
        (AnswerBlocked("blocked", "SAFETY"), Permanent, Reason.ANSWER_BLOCKED),
        (AnswerTruncated("cut", 16384), Permanent, Reason.ANSWER_TRUNCATED),
        (AnswerInvalid("bad", "x", "not JSON"), Permanent, Reason.ANSWER_INVALID),
        (BadDocument("the PDF is encrypted"), Permanent, Reason.BAD_INPUT),
        (BE("stopped", scope="batch", stopped=True), OverBudget, Reason.BUDGET_OVERRUN),
        (BE("stopped", scope="day", stopped=True), Retry, Reason.BUDGET_OVERRUN),
    ],
)
def test_the_failure_policy_for_each_unusable_answer(
    error: Exception, kind: type, reason: Reason
) -> None:
    steer = failed_call(error)  # type: ignore[arg-type]
    assert steer is not None and isinstance(steer, kind) and steer.reason is reason
    if isinstance(steer, Retry):
        assert steer.count_attempt is False  # waiting for a person is not an attempt


def test_an_unreadable_answer_is_retried_within_the_jobs_attempts_then_says_what_to_do() -> None:
    """A 200 answer that is not JSON is billed and unreadable, not a refusal: a counted
    retry while attempts are left, each saying it was paid for; the last says what to do."""
    from pipeline.llm.failure import malformed
    from pipeline.llm.retry import exhausted_error

    failure = malformed("gemini", ValueError("Unterminated string"))
    assert failure.maybe_billed and failure.malformed and not failure.retryable
    error = exhausted_error(failure, 1, "per-call retries")
    assert isinstance(error, AnswerMalformed)
    first = failed_call(error, 1, 3, "f7c5dd4e412a4bb8")
    assert isinstance(first, Retry) and first.count_attempt  # bounded by the job's attempts
    assert first.reason is Reason.ANSWER_MALFORMED
    assert "not valid JSON" in str(first) and "paid for" in str(first)
    assert "retried 1 of 2 times (attempt 2 of 3 next)" in str(first)
    last = failed_call(error, 3, 3, "f7c5dd4e412a4bb8")
    assert isinstance(last, Retry) and last.reason is Reason.ANSWER_MALFORMED
    assert "pipeline retry f7c5dd4e412a --failed" in str(last)
    assert 'POST /batches/f7c5dd4e412a/retry with {"failed": true}' in str(last)
