"""The paid-call failure policy: what a failed call means for the job that made it
(`failed_call`), and how long a job refused by a budget window or a busy budget waits.

The one place this is decided; a job keeps the typed `Reason` it returns, which status, the
API and the dashboard read (never the message text). Tasks (tasks/analysis_call.py,
tasks/batch_holds.py) call it where a paid call failed.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from pipeline.errors import (
    AnswerBlocked,
    AnswerInvalid,
    AnswerMalformed,
    AnswerTruncated,
    BudgetExceeded,
    DailyQuotaExhausted,
    InputError,
    JobError,
    OverBudget,
    OverLimit,
    Permanent,
    PipelineError,
    ProviderError,
    RateLimited,
    Reason,
    Retry,
    UnknownModel,
)
from pipeline.words import retry_command

# A job whose budget is full only of other calls' holds waits this long (plus jitter, so
# waiting jobs do not all come back at once) for them to settle.
HELD_BUDGET_RETRY_S = 2.0
HELD_BUDGET_JITTER_S = 3.0
# An answer that was not JSON is asked again after this long: it was cut or garbled on its
# way (a proxy, a broken stream), not refused for load, so a long back-off buys nothing.
MALFORMED_RETRY_S = 2.0


# A job waiting for the day or month budget window looks again at least this often, so a
# raised limit is noticed without waiting for the window to turn.
WINDOW_RECHECK_S = 3600.0


def window_wait(scope: str, now: datetime | None = None) -> tuple[float, str]:
    """(seconds to wait, the words saying when the job tries again) for a job refused by
    the UTC day (or month) budget window: at the window's turn when that is within
    WINDOW_RECHECK_S, else WINDOW_RECHECK_S from now and again each time until the turn.
    The words name the true times, so what status says is what the job does."""
    now = now or datetime.now(UTC)
    if scope == "month":
        nxt = (now.replace(day=1) + timedelta(days=32)).replace(day=1)
    else:
        nxt = now + timedelta(days=1)
    reset = nxt.replace(hour=0, minute=0, second=0, microsecond=0)
    delay_s = min(WINDOW_RECHECK_S, max(1.0, (reset - now).total_seconds()))
    turn = f"{reset:%Y-%m-%d %H:%M} UTC"
    if delay_s < WINDOW_RECHECK_S:
        return delay_s, f"the job tries again when the window turns, at {turn}"
    at = now + timedelta(seconds=delay_s)
    return delay_s, (f"the job tries again at {at:%Y-%m-%d %H:%M:%S} UTC, then every "
                     f"{WINDOW_RECHECK_S / 3600:g} h until the window turns at {turn} (a "
                     "raised limit is noticed at the next try)")  # fmt: skip



def failed_call(exc: PipelineError, attempt: int = 1, max_attempts: int = 1,
                batch: str | None = None) -> JobError | None:  # fmt: skip
    """The paid-call failure policy: what a failed call means for the job that made it.

    The one place this is decided; the job keeps the typed `Reason`, which status, the API and
    the dashboard read (never the message text).
    - A scope stopped after an overrun (a bill above its reservation): the job ends
      `over_budget` for a batch, or waits out the window for the day or month, with reason
      `budget_overrun`, until a person raises the limit.
    - A budget full only of other calls' worst-case holds: postponed a few seconds, attempt
      kept, since those holds usually settle lower (`budget_holds`).
    - The batch budget cannot fit the call: the job ends `over_budget`, nothing charged.
    - The day or month budget cannot fit: postponed until the window turns (`budget_window`).
    - The provider's per-day quota: postponed, attempt kept; the limiter gate keeps every
      worker from claiming that model's jobs until the reset (`daily_quota`).
    - A provider refusal the same request would meet again (a 4xx other than 408/429, or a
      failure marked not retryable), a model without a price, a call over the per-minute
      token limit: failed at once instead of retrying for minutes.
    - Still rate limited, or the provider still failing after the call's own retries: retried
      on the job's schedule (`rate_limit`, `provider_error`).
    - A paid answer that cannot be used: blocked or stopped for SAFETY etc. fails at once
      (`answer_blocked`): the same request meets the same refusal. Truncated or invalid
      answers reach here only when the task's own remedy (a larger output budget, one repair
      call) failed too: failed at once (`answer_truncated`, `answer_invalid`).
    - An answer that was not JSON (HTTP 200, billed, unreadable: `answer_malformed`) is no
      refusal, and one bad answer does not make the next one bad: retried as a counted
      attempt of the job. The job's attempts bound it (analyze_document: 3, so at most two
      more paid answers), so a model or proxy that always garbles stops; the last attempt's
      message says what to check. `attempt`/`max_attempts` are the job's (1-based), `batch`
      its batch id (for the command to run it again).
    - A document the provider cannot read (an InputError such as BadDocument, raised by the
      offline analyzer): failed at once, never retried (`bad_input`).
    Returns None for errors that are not about the call (they propagate unchanged).
    """
    if isinstance(exc, BudgetExceeded):
        if exc.stopped:
            if exc.scope == "batch":
                return OverBudget(str(exc), reason=Reason.BUDGET_OVERRUN)
            delay_s, when = window_wait(exc.scope)
            return Retry(f"{exc}; {when}", delay_s=delay_s, count_attempt=False,
                         reason=Reason.BUDGET_OVERRUN)  # fmt: skip
        if exc.held_only:
            return Retry(
                f"waiting for running calls to settle: {exc}",
                delay_s=HELD_BUDGET_RETRY_S + random.uniform(0, HELD_BUDGET_JITTER_S),
                count_attempt=False,
                reason=Reason.BUDGET_HOLDS,
            )
        if exc.scope == "batch":
            return OverBudget(str(exc))
        delay_s, when = window_wait(exc.scope)
        return Retry(
            f"waiting for the {exc.scope} budget: {exc}; {when}",
            delay_s=delay_s,
            count_attempt=False,
            reason=Reason.BUDGET_WINDOW,
        )
    if isinstance(exc, DailyQuotaExhausted):
        return Retry(str(exc), delay_s=1.0, count_attempt=False, reason=Reason.DAILY_QUOTA)
    if isinstance(exc, ProviderError):
        refused = not exc.retryable or (exc.code is not None and 400 <= exc.code < 500
                                        and exc.code not in (408, 429))  # fmt: skip
        if refused:
            return Permanent(str(exc), reason=Reason.PROVIDER_REFUSED)
        return Retry(f"ProviderError: {exc}", reason=Reason.PROVIDER_ERROR)
    if isinstance(exc, RateLimited):
        return Retry(f"RateLimited: {exc}", reason=Reason.RATE_LIMIT)
    if isinstance(exc, OverLimit | UnknownModel | InputError):
        return Permanent(str(exc), reason=Reason.BAD_INPUT)
    if isinstance(exc, AnswerBlocked):
        return Permanent(str(exc), reason=Reason.ANSWER_BLOCKED)
    if isinstance(exc, AnswerTruncated):
        return Permanent(str(exc), reason=Reason.ANSWER_TRUNCATED)
    if isinstance(exc, AnswerInvalid):
        return Permanent(str(exc), reason=Reason.ANSWER_INVALID)
    if isinstance(exc, AnswerMalformed):
        return Retry(malformed_words(exc, attempt, max_attempts, batch),
                     delay_s=MALFORMED_RETRY_S, reason=Reason.ANSWER_MALFORMED)  # fmt: skip
    return None


def malformed_words(exc: AnswerMalformed, attempt: int, max_attempts: int,
                    batch: str | None = None) -> str:  # fmt: skip
    """What became of an unreadable answer on attempt `attempt` of `max_attempts`: asked
    again, or (none left) what to do."""
    if attempt < max_attempts:
        return (f"{exc}; retried {attempt} of {max_attempts - 1} times (attempt "
                f"{attempt + 1} of {max_attempts} next)")
    return (f"{exc}; that was its last attempt ({attempt} of {max_attempts}): answers that keep "
            "coming back unreadable mean something cuts or garbles them on their way (a proxy "
            "or gateway at the base URL, the network) or the provider is failing; check them, "
            f"then run it again with {retry_command((batch or 'BATCH')[:12], 'failed')}")
