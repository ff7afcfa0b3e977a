"""One log line per job start and end, so a worker's log tells what it did.

    job 3f2a… analyze_document started (attempt 1/3) document=report.pdf
    job 3f2a… analyze_document complete in 12.41s (attempt 1/3) document=report.pdf
        cost_usd=0.001234000
    job 9c1e… m.broken dead in 0.02s (attempt 2/2, not retried: its last attempt): ValueError: …
    Traceback (most recent call last): …
    job 7b0d… analyze_document failed in 1.20s (attempt 1/3, not retried: a permanent error
        (provider_refused), the same request would fail again): the provider refused …

Each record also carries the fields as attributes (`job_id`, `task`, `attempt`, `outcome`,
`duration_s`, and what the worker's `job_fields` adds, e.g. `document`, `cost_usd`), which
`pipeline worker --log-format json` writes out as JSON keys. A task that raised something
unexpected gets its traceback on the end line; an error it raised on purpose (a JobError)
gets its message only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.queue.job import Job

log = logging.getLogger("pipeline.worker.jobs")

JobFields = Callable[[Job], Mapping[str, Any]]
_ENDED_BADLY = frozenset({"failed", "dead", "over_budget"})
# Why an attempt that ended the job is not followed by another, whatever attempts are left.
_FINAL = {
    "failed": "a permanent error ({reason}), the same request would fail again",
    "over_budget": "over its batch budget ({reason}), nothing more is charged",
    "dead": "its last attempt",
    "cancelled": "cancelled",
}


def describe(job_fields: JobFields | None, job: Job) -> dict[str, Any]:
    """The extra fields `job_fields` gives for `job`'s log lines ({} without one, or when it
    fails: a log line must never cost the job)."""
    if job_fields is None:
        return {}
    try:
        return dict(job_fields(job))
    except Exception:
        log.exception("job %s: could not describe it for the log", job.id)
        return {}


def _fields(job: Job, extra: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    shown = " ".join(f"{k}={v}" for k, v in extra.items() if v not in (None, ""))
    return (f" {shown}" if shown else ""), {
        "job_id": job.id, "task": job.task, "attempt": job.attempt,
        "max_attempts": job.max_attempts, "batch": job.batch, **extra,
    }  # fmt: skip


def started(job: Job, extra: Mapping[str, Any]) -> None:
    if not log.isEnabledFor(logging.INFO):  # a busy worker at WARNING builds no line per job
        return
    tail, fields = _fields(job, extra)
    log.info("job %s %s started (attempt %d/%d)%s", job.id, job.task, job.attempt,
             job.max_attempts, tail, extra={**fields, "outcome": "started"})  # fmt: skip


def ended(
    job: Job,
    outcome: str,
    duration_s: float,
    extra: Mapping[str, Any],
    *,
    error: str = "",
    traceback: str = "",
    delay_s: float = 0.0,
    reason: str = "",
) -> None:
    """The end of an attempt: `outcome` as settled (complete, retry, postpone, failed, dead,
    over_budget, cancelled, release, lost, fenced), `reason` the settlement's typed Reason.
    An attempt that ends the job says it is not retried, and why."""
    level = logging.INFO
    if outcome in _ENDED_BADLY or traceback:
        level = logging.ERROR
    elif outcome in ("retry", "fenced", "lost"):
        level = logging.WARNING
    if not log.isEnabledFor(level):
        return
    tail, fields = _fields(job, extra)
    fields.update(outcome=outcome, duration_s=round(duration_s, 3))
    again = f", again in {delay_s:.3g}s" if outcome in ("retry", "postpone") else ""
    if outcome in _FINAL:
        fields["not_retried"] = _FINAL[outcome].format(reason=reason or "error")
        again = f", not retried: {fields['not_retried']}"
    why = f": {error}" if error else ""
    message = (f"job {job.id} {job.task} {outcome} in {duration_s:.2f}s (attempt "
               f"{job.attempt}/{job.max_attempts}{again}){tail}{why}")  # fmt: skip
    if traceback:
        fields["traceback"] = traceback
        message += "\n" + traceback.rstrip()
    log.log(level, "%s", message, extra=fields)
