"""Every error a user can meet, in one tree, each message saying what to do next.

    PipelineError
    ├── SettingsError            a setting is malformed or unknown (names the variable)
    ├── RedisUnavailable         Redis cannot be reached or started
    ├── DatabaseUnavailable      the SQL ledger cannot be reached
    ├── MissingExtra             an optional extra (e.g. pipeline[chart]) is not installed
    ├── QueueError
    │   ├── UnknownTask          a job names a task no worker module registers
    │   ├── JobNotFound          no such job id (or its record expired)
    │   ├── JobTimeout           waiting for a result ran past its deadline
    │   ├── JobFailed            the awaited job ended failed, dead or cancelled
    │   └── NotSerializable      task arguments or results that are not JSON
    ├── JobError                 raised *by* task code to steer the queue
    │   ├── Retry                retry now-ish, optionally after a given delay
    │   ├── Permanent            fail without retrying (bad input, 4xx from a provider)
    │   └── OverBudget           end the job as over_budget, nothing charged
    ├── LLMError
    │   ├── UnknownModel         a model not in config/pricing.toml
    │   ├── ProviderError        the provider refused the request (4xx, .code), or kept
    │   │                        failing (5xx, timeouts) after our retries
    │   ├── RateLimited          429 after our retries were used up (or no permit in time)
    │   ├── DailyQuotaExhausted  a per-day quota; dispatch stops until it resets
    │   └── OverLimit            one call bigger than the model's per-minute token limit
    ├── BudgetError
    │   └── BudgetExceeded       a reservation did not fit a budget (.scope: batch|day|month,
    │                            .held_only: only running calls' holds were in the way)
    └── InputError
        ├── BadDocument          a PDF that is corrupt, encrypted, empty or too large
        └── UploadRejected       an HTTP upload refused as a whole (.status_code: 400/413/415/422)

The CLI catches `PipelineError` and prints its message without a traceback.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the project raises on purpose."""


class SettingsError(PipelineError):
    pass


class RedisUnavailable(PipelineError):
    pass


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


class JobError(PipelineError):
    """Raised by task code to tell the worker how the attempt ended."""


class Retry(JobError):
    """Try again after `delay_s`. With `count_attempt=False` the job is only postponed (it
    waits for a quota or budget window) and keeps the attempts it has left."""

    def __init__(
        self,
        message: str = "retry requested",
        delay_s: float | None = None,
        count_attempt: bool = True,
    ) -> None:
        super().__init__(message)
        self.delay_s = delay_s
        self.count_attempt = count_attempt


class Permanent(JobError):
    pass


class OverBudget(JobError):
    pass


class LLMError(PipelineError):
    pass


class UnknownModel(LLMError):
    pass


class ProviderError(LLMError):
    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class RateLimited(LLMError):
    pass


class DailyQuotaExhausted(LLMError):
    pass


class OverLimit(LLMError):
    pass


class BudgetError(PipelineError):
    pass


class BudgetExceeded(BudgetError):
    """`.scope` names the budget that did not fit: "batch", "day" or "month".

    `.held_only` is True when settled spend alone leaves room and only other running calls'
    worst-case holds are in the way: waiting for them to settle may well make room."""

    def __init__(self, message: str, scope: str = "", held_only: bool = False) -> None:
        super().__init__(message)
        self.scope = scope
        self.held_only = held_only


class InputError(PipelineError):
    pass


class BadDocument(InputError):
    pass


class UploadRejected(InputError):
    """`.status_code` is the HTTP status the API answers with (413 too large, 415 not a PDF...)."""

    def __init__(self, message: str, status_code: int = 422) -> None:
        super().__init__(message)
        self.status_code = status_code
