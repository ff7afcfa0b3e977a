"""When a failed call attempt is worth another, how long to wait, and what to raise when not.

Each attempt of a paid call may cost money and quota, so retrying is decided here, once,
on the plain `ProviderFailure` fields, and not by the SDK (google-genai's own retries
ignore RetryInfo and would triple-send within a second). Rules:

- 429, 408, 500, 502, 503, 504 and timeouts are retried, with exponential back-off plus
  jitter, and never sooner than the provider's RetryInfo.retryDelay;
- 400/401/403/404 (and anything the provider marks non-retryable) are not: they become
  `ProviderError` carrying the provider's own message;
- a per-day quota is not retried: `DailyQuotaExhausted`;
- an answer that is not JSON (HTTP 200, billed) is not retried here, where a retry would be
  paid within one attempt of the job without anyone deciding it: `AnswerMalformed`, which
  the job retries within its own attempts (failure_policy.failed_call);
- a `RetryBudget` caps attempts across all calls of one job, so a job of ten calls cannot
  spend ten times the per-call retries.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from pipeline.errors import (
    AnswerMalformed,
    DailyQuotaExhausted,
    LLMError,
    ProviderError,
    RateLimited,
)
from pipeline.llm.failure import ProviderCallError, ProviderFailure, maybe_billed_words
from pipeline.words import counted


def failure_of(exc: BaseException | None) -> ProviderFailure | None:
    """The failure behind an exception, if it is one the retry rules know about."""
    if isinstance(exc, ProviderCallError):
        return exc.failure
    if isinstance(exc, TimeoutError):
        return ProviderFailure.timeout()
    return None


class RetryBudget:
    """Attempts left for one job across all its calls; one instance per job, in process.

    It lives with the job's context rather than in Redis: a job that is re-run after a
    crash starts a new budget, which the queue's own attempt limit already bounds.
    """

    def __init__(self, max_attempts: int, provider: str = "gemini") -> None:
        self.max_attempts = max_attempts
        self.provider = provider  # who is asked: what an unreadable answer may have cost
        self.used = 0
        self.last_failure: ProviderFailure | None = None

    @property
    def remaining(self) -> int:
        return max(0, self.max_attempts - self.used)

    def take(self) -> None:
        if self.remaining <= 0:
            raise exhausted_error(self.last_failure, self.used, "this job's retry budget",
                                  self.provider)  # fmt: skip
        self.used += 1


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5  # per call, the first attempt included
    initial_delay_s: float = 1.0
    max_delay_s: float = 60.0
    exp_base: float = 2.0
    jitter_s: float = 1.0

    def should_retry(self, exc: BaseException) -> bool:
        failure = failure_of(exc)
        return failure is not None and failure.retryable and not failure.per_day

    def delay_s(self, attempt: int, failure: ProviderFailure | None) -> float:
        """Seconds before attempt `attempt + 1`; never less than the provider's retryDelay."""
        backoff = min(self.max_delay_s, self.initial_delay_s * self.exp_base ** (attempt - 1))
        jitter = random.uniform(0, self.jitter_s)
        floor = failure.retry_delay_s if failure and failure.retry_delay_s else 0.0
        return max(backoff + jitter, floor + jitter)

    def retrying(self, budget: RetryBudget | None = None) -> AsyncRetrying:
        """A tenacity controller for one call; the caller runs each attempt inside it."""

        def stop(state: RetryCallState) -> bool:
            if state.attempt_number >= self.max_attempts:
                return True
            return budget is not None and budget.remaining <= 0

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            return self.delay_s(state.attempt_number, failure_of(exc))

        return AsyncRetrying(
            stop=stop, wait=wait, retry=retry_if_exception(self.should_retry), reraise=True
        )


def exhausted_error(failure: ProviderFailure | None, attempts: int, what: str,
                    provider: str = "gemini") -> LLMError:  # fmt: skip
    """The error to raise once no attempt is left (or none is worth making)."""
    if failure is None:
        return RateLimited(
            f"{what} of {counted(attempts, 'attempt')} is used up; retry the job later"
        )
    if failure.per_day:
        return DailyQuotaExhausted(
            f"per-day quota exhausted ({failure.message}); dispatch stops until midnight "
            "Pacific time — raise the quota in AI Studio or choose another model"
        )
    if failure.rate_limited:
        return RateLimited(
            f"still rate limited after {counted(attempts, 'attempt')} ({what}): {failure.message}; "
            "lower PIPELINE_RPM/PIPELINE_TPM or retry later"
        )
    if failure.malformed:  # answered and billed, unreadable: the job decides (failed_call)
        return AnswerMalformed(failure.message, stop_reason=failure.status)
    if failure.retryable:
        return ProviderError(
            f"provider still failing after {counted(attempts, 'attempt')} ({what}): "
            f"{failure.code} {failure.status}: {failure.message}; retry later",
            code=failure.code,
            retryable=True,
        )
    if failure.maybe_billed:  # no refusal: an answer came back, or may have, unreadable
        return ProviderError(
            f"no usable answer from the provider ({maybe_billed_words(provider)}): "
            f"{failure.code} {failure.status}: {failure.message}",
            code=failure.code,
        )
    return ProviderError(
        f"the provider refused the request: {failure.code} {failure.status}: {failure.message}",
        code=failure.code,
    )
