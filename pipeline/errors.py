"""Every error a user can meet, in one tree, each message saying what to do next.

    PipelineError
    ├── SettingsError            a setting is malformed or unknown (names the variable)
    ├── RedisUnavailable         Redis cannot be reached or started
    │   └── RedisNotRunning      the private Redis is stopped, and a read-only command
    │                            (status, results, dead list) does not start it
    ├── DatabaseUnavailable      the SQL ledger cannot be reached
    ├── MissingExtra             an optional extra (e.g. pipeline[chart]) is not installed
    ├── QueueError
    │   ├── UnknownTask          a job names a task no worker module registers
    │   ├── JobNotFound          no such job id (or its record expired)
    │   ├── JobTimeout           waiting for a result ran past its deadline
    │   ├── JobFailed            the awaited job ended failed, dead or cancelled
    │   └── NotSerializable      task arguments or results that are not JSON
    ├── JobError                 raised *by* task code to steer the queue; `.reason` is a
    │   │                        `Reason` stored on the job, read by status, API, dashboard
    │   ├── Retry                retry now-ish, optionally after a given delay
    │   ├── Permanent            fail without retrying (bad input, 4xx from a provider)
    │   └── OverBudget           end the job as over_budget, nothing charged
    ├── LLMError
    │   ├── UnknownModel         a model not in config/pricing.toml
    │   ├── ProviderError        the provider refused the request (4xx, .code), or kept
    │   │                        failing (5xx, timeouts) after our retries
    │   ├── RateLimited          429 after our retries were used up (or no permit in time)
    │   ├── DailyQuotaExhausted  a per-day quota; dispatch stops until it resets
    │   ├── OverLimit            one call bigger than the model's per-minute token limit
    │   └── UnusableAnswer       a paid answer that cannot be used (booked, never stored)
    │       ├── AnswerBlocked    blockReason, no candidate, or SAFETY/RECITATION/... stop
    │       ├── AnswerTruncated  finishReason MAX_TOKENS (.max_output_tokens)
    │       ├── AnswerInvalid    finished normally but failed validation (.text, .problem)
    │       └── AnswerMalformed  answered (HTTP 200, billed) in a body that is not JSON: no
    │                            answer could be read; another attempt may read one
    ├── BudgetError
    │   └── BudgetExceeded       a reservation did not fit a budget (.scope: batch|day|month,
    │                            .held_only: only running calls' holds were in the way,
    │                            .stopped: the scope stopped after a bill over its hold)
    ├── InputError
    │   ├── BudgetTooSmall       a budget below what any one call reserves: nothing could start
    │   ├── BadDocument          a PDF that is corrupt, encrypted, empty or too large
    │   │   └── RequestTooLarge  a page that no inline request can carry
    │   ├── BatchNotFound        no batch by that id, id prefix or label
    │   ├── AmbiguousBatch       an id prefix several batches start with (.candidates)
    │   ├── BadDeadline          a --deadline that is not a duration or a timestamp, or is past
    │   │   └── DeadlineTooShort --mode batch with a deadline inside the fallback margin
    │   └── UploadRejected       an HTTP upload refused as a whole (.status_code: 400/413/415/422)
    └── DocumentStoreError       PIPELINE_DOCUMENT_STORE unusable (bad spec, S3 error)
        └── DocumentMissing      a document's bytes are not in the store (says where it looked)

The CLI catches `PipelineError` and prints its message without a traceback.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum


class PipelineError(Exception):
    """Base of every error the project raises on purpose."""


class SettingsError(PipelineError):
    pass


class RedisUnavailable(PipelineError):
    pass


class RedisNotRunning(RedisUnavailable):
    """The embedded Redis under PIPELINE_HOME is not running and the command only reads: it
    says how to start it rather than start a server the user stopped."""


class DatabaseUnavailable(PipelineError):
    pass


class MissingExtra(PipelineError):
    pass


class QueueError(PipelineError):
    pass


class UnknownTask(QueueError):
    pass


class JobNotFound(QueueError):
    pass


class JobTimeout(QueueError):
    pass


class JobFailed(QueueError):
    def __init__(self, job_id: str, state: str, error: str | None) -> None:
        super().__init__(f"job {job_id} ended {state}: {error or 'no error recorded'}")
        self.job_id = job_id
        self.state = state
        self.error = error



class NotSerializable(QueueError):
    pass


class Reason(StrEnum):
    """Why a job ended or waits, as a typed field on the job (`reason`), so what `status`, the
    API and the dashboard report never depends on the wording of a message."""

    ERROR = "error"  # the task raised something unexpected
    TIMEOUT = "timeout"  # the task ran past its timeout_s
    LEASE_EXPIRED = "lease_expired"  # its worker died or lost Redis on the last attempt
    CANCELLED = "cancelled"  # a person (or the client) cancelled it
    BUDGET_WINDOW = "budget_window"  # the day or month budget is spent until the window turns
    BUDGET_HOLDS = "budget_holds"  # only running calls' worst-case holds fill the budget
    OVER_BUDGET = "over_budget"  # the batch budget cannot fit the call
    DAILY_QUOTA = "daily_quota"  # the provider's per-day quota is exhausted until its reset
    RATE_LIMIT = "rate_limit"  # still rate limited after the call's retries
    PROVIDER_ERROR = "provider_error"  # the provider kept failing (5xx, timeouts)
    PROVIDER_REFUSED = "provider_refused"  # a 4xx the same request would meet again
    BAD_INPUT = "bad_input"  # the document or the arguments cannot be processed
    ANSWER_BLOCKED = "answer_blocked"  # the provider blocked the prompt or stopped the answer
    ANSWER_TRUNCATED = "answer_truncated"  # cut at max_output_tokens even with the larger budget
    ANSWER_INVALID = "answer_invalid"  # finished answers failed validation, repair included
    ANSWER_MALFORMED = "answer_malformed"  # answered and billed, but not JSON: unreadable
    BUDGET_OVERRUN = "budget_overrun"  # a bill passed its hold; the scope waits for a person
    REQUEST_TOO_LARGE = "request_too_large"  # a page no inline request can carry
    IN_BATCH = "in_batch"  # answered by a Gemini batch job that has not finished yet


# Reasons a job only waits for, attempt kept: status shows them as "waiting".
WAITING_REASONS = frozenset(
    {Reason.BUDGET_WINDOW, Reason.BUDGET_HOLDS, Reason.DAILY_QUOTA, Reason.BUDGET_OVERRUN,
     Reason.IN_BATCH}
)  # fmt: skip


class JobError(PipelineError):
    """Raised by task code to tell the worker how the attempt ended; `reason` is kept on the
    job as a typed field."""

    default_reason = Reason.ERROR

    def __init__(self, message: str = "", reason: Reason | None = None) -> None:
        super().__init__(message)
        self.reason = reason or self.default_reason


class Retry(JobError):
    """Try again after `delay_s`. With `count_attempt=False` the job is only postponed (it
    waits for a quota or budget window) and keeps the attempts it has left."""

    def __init__(
        self,
        message: str = "retry requested",
        delay_s: float | None = None,
        count_attempt: bool = True,
        reason: Reason | None = None,
    ) -> None:
        super().__init__(message, reason)
        self.delay_s = delay_s
        self.count_attempt = count_attempt


class Permanent(JobError):
    """Fail the job now, without retrying: the same input would fail the same way."""

    default_reason = Reason.BAD_INPUT


class OverBudget(JobError):
    """End the job `over_budget`: the batch budget cannot fit its next call."""

    default_reason = Reason.OVER_BUDGET


class LLMError(PipelineError):
    pass


class UnknownModel(LLMError):
    pass


class ProviderError(LLMError):
    """`.code` is the provider's HTTP status (0 when no answer came back); `.retryable` says
    whether the same request may succeed later (5xx, timeouts) or would be refused again."""

    def __init__(self, message: str, code: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


class RateLimited(LLMError):
    pass


class DailyQuotaExhausted(LLMError):
    pass


class OverLimit(LLMError):
    pass


class UnusableAnswer(LLMError):
    """A paid answer that cannot be used: recorded in the ledger with its own outcome and
    counted as wasted spend, never kept in the call store, so a retry makes a fresh call.
    `.stop_reason` is the provider's finishReason or block reason."""

    def __init__(self, message: str, stop_reason: str = "") -> None:
        super().__init__(message)
        self.stop_reason = stop_reason


class AnswerBlocked(UnusableAnswer):
    """The provider blocked the prompt (promptFeedback.blockReason), sent no candidate, or
    stopped the answer for SAFETY, RECITATION, PROHIBITED_CONTENT, BLOCKLIST, SPII, OTHER...:
    the same request meets the same refusal."""


class AnswerTruncated(UnusableAnswer):
    """finishReason MAX_TOKENS: the answer (or the thinking before it) filled
    `.max_output_tokens`; `.thoughts_tokens` says how much of it was thinking."""

    def __init__(self, message: str, max_output_tokens: int, thoughts_tokens: int = 0) -> None:
        super().__init__(message, "MAX_TOKENS")
        self.max_output_tokens = max_output_tokens
        self.thoughts_tokens = thoughts_tokens


class AnswerInvalid(UnusableAnswer):
    """The answer finished normally (STOP) but failed validation: `.problem` says how,
    `.text` is the answer, for a repair call."""

    def __init__(self, message: str, text: str, problem: str) -> None:
        super().__init__(message, "STOP")
        self.text = text
        self.problem = problem


class AnswerMalformed(UnusableAnswer):
    """The provider answered (HTTP 200, so billed) in a body that is not the JSON its API
    sends (cut mid-stream, garbled by a proxy): no answer, stop reason or usage could be
    read. Not a refusal: the next attempt may well be read, so the job retries it (bounded
    by its attempts; failure_policy.failed_call)."""


class BudgetError(PipelineError):
    pass


class BudgetExceeded(BudgetError):
    """`.scope` names the budget that did not fit: "batch", "day" or "month".

    `.held_only` is True when settled spend alone leaves room and only other running calls'
    worst-case holds are in the way: waiting for them to settle may well make room.
    `.stopped` is True when the scope stopped admitting calls after a bill passed its
    reservation: nothing is admitted until a person raises the limit. `.spent_usd`,
    `.reserved_usd` (other calls' holds) and `.limit_usd` (Decimal, or None) are the scope's
    figures when it refused."""

    def __init__(
        self, message: str, scope: str = "", held_only: bool = False, stopped: bool = False,
        *, scope_name: str = "", spent_usd: Decimal | None = None,
        limit_usd: Decimal | None = None, reserved_usd: Decimal | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.scope = scope
        self.held_only = held_only
        self.stopped = stopped
        self.scope_name = scope_name  # the batch id, the day or the month
        self.spent_usd = spent_usd  # Decimal: settled spend of the scope when refused
        self.limit_usd = limit_usd  # Decimal: the scope's limit in force
        self.reserved_usd = reserved_usd  # Decimal: held by calls in flight when refused


class InputError(PipelineError):
    pass


class BudgetTooSmall(InputError):
    """A batch budget below the least any one paid call reserves before it is sent (its
    output bound at the model's price): no document could ever start, so nothing is queued.
    `.floor_usd` is that least amount (Decimal)."""

    def __init__(self, message: str, floor_usd: Decimal) -> None:
        super().__init__(message)
        self.floor_usd = floor_usd


class BadDocument(InputError):
    pass


class RequestTooLarge(BadDocument):
    """A page whose request alone is over the provider's inline request limit: splitting
    cannot make it fit, so it is refused at submit (and at the worker, the same rule)."""
class BatchNotFound(InputError):
    pass


class AmbiguousBatch(InputError):
    """An id prefix several batches start with, or one too short to name a batch; the
    message lists them. `.candidates` are their ids, newest first."""

    def __init__(self, message: str, candidates: list[str]) -> None:
        super().__init__(message)
        self.candidates = candidates


class BadDeadline(InputError):
    """A deadline that cannot be read (not a duration such as `6h` nor a timestamp with its
    offset) or that has passed; the message shows both accepted forms."""


class DeadlineTooShort(BadDeadline):
    """`--mode batch` with a deadline so close that the document would have to leave Batch
    Mode at once (inside PIPELINE_BATCH_FALLBACK_MARGIN_S); the message says what to use."""


class UploadRejected(InputError):
    """`.status_code` is the HTTP status the API answers with (413 too large, 415 not a PDF...)."""

    def __init__(self, message: str, status_code: int = 422) -> None:
        super().__init__(message)
        self.status_code = status_code


class DocumentStoreError(PipelineError):
    """The document store (pipeline/storage/) cannot be used as configured."""


class DocumentMissing(DocumentStoreError):
    """A document's bytes are not in the store: removed after no job of its key prefix held
    them, or from outside the pipeline, or written on another machine's local folder."""
