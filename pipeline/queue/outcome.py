"""How an attempt ends: from what the task raised to the outcome finish.lua applies.

Kept apart from the worker loop so the rules read in one place: which errors retry, which
fail for good, which only postpone, and how a settlement survives a Redis outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeGuard

from redis.exceptions import RedisError

from pipeline.errors import (
    JobError,
    NotSerializable,
    OverBudget,
    Permanent,
    Reason,
    Retry,
    UnknownTask,
)
from pipeline.queue.backoff import retry_delay_s
from pipeline.queue.batcher import ScriptBatcher
from pipeline.queue.job import Job
from pipeline.queue.scripts import Scripts, settle_keys
from pipeline.queue.stats import Stats
from pipeline.queue.task import dumps
from pipeline.redis.connection import text
from pipeline.redis.keys import EVENTS_MAXLEN, Keys
from pipeline.redis.replication import ReplicaWait

log = logging.getLogger("pipeline.worker")


@dataclass
class Settlement:
    outcome: str  # complete|failed|dead|cancelled|over_budget|retry|postpone|release|lost
    result: str = "null"  # JSON
    error: str = ""
    traceback: str = ""
    delay_s: float = 0.0
    reason: str = ""  # a pipeline.errors.Reason for every outcome but complete and release


@dataclass
class Counters:
    """What this worker's attempts came to, each outcome under its own name."""

    claimed: int = 0
    completed: int = 0
    failed: int = 0  # failed or dead
    retried: int = 0  # after an error, with an attempt used
    postponed: int = 0  # for a budget window, a quota or a batch job, no attempt used
    cancelled: int = 0
    over_budget: int = 0
    fenced: int = 0  # settlements refused because the token was stale
    released: int = 0  # given back to the queue at shutdown

    def count(self, outcome: str) -> None:
        name = {"complete": "completed", "retry": "retried", "postpone": "postponed",
                "release": "released", "cancelled": "cancelled",
                "over_budget": "over_budget"}.get(outcome, "failed")  # fmt: skip
        setattr(self, name, getattr(self, name) + 1)

    def __str__(self) -> str:
        """In words, only what happened: "claimed 3, completed 2, postponed 5"."""
        said = [f"{name.replace('_', ' ')} {n}" for name, n in vars(self).items() if n]
        return ", ".join(said) or "no jobs claimed"


def from_value(job: Job, value: Any) -> Settlement:
    """What the task returned, as JSON; NotSerializable if it is not JSON."""
    return Settlement("complete", result=dumps(value, f"result of {job.task}"))


def returned(body: Awaitable[Any]) -> TypeGuard[asyncio.Future[Any]]:
    """Whether `body` is a future (a plain function's thread) whose function has ended,
    returning or raising; False for a coroutine, and for a future the cancel reached first."""
    return isinstance(body, asyncio.Future) and body.done() and not body.cancelled()


def from_stop(reason: str | None) -> Settlement:
    """The job's task was cancelled by the worker: on request, lease lost, or shutdown."""
    outcome = {"cancel": "cancelled", "lost": "lost"}.get(reason or "", "release")
    if outcome == "cancelled":
        return Settlement(outcome, error="cancelled on request", reason=Reason.CANCELLED)
    return Settlement(outcome)


def _said(exc: BaseException) -> str:
    """`str(exc)`, or a stand-in when the exception's own __str__ raises: this runs in the
    body's done callback (worker.py), where an error is only logged by the loop and the job
    would never settle, its lease renewed for ever."""
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__}: its message could not be read>"


def from_error(job: Job, exc: BaseException) -> Settlement:
    """What the task raised decides: fail now, end over budget, postpone, retry, or dead."""
    if isinstance(exc, UnknownTask | NotSerializable):
        return Settlement("failed", error=_said(exc), reason=Reason.BAD_INPUT)
    if isinstance(exc, Permanent):
        return Settlement("failed", error=_said(exc), reason=exc.reason)
    if isinstance(exc, OverBudget):
        return Settlement("over_budget", error=_said(exc), reason=exc.reason)
    if isinstance(exc, Retry) and not exc.count_attempt:
        return Settlement(
            "postpone", error=_said(exc), delay_s=exc.delay_s or 0.0, reason=exc.reason
        )
    delay_s, tb, reason = 0.0, "", Reason.ERROR
    if isinstance(exc, TimeoutError):
        error, reason = f"timed out after {job.timeout_s:g}s (the task's timeout_s)", Reason.TIMEOUT
    elif isinstance(exc, JobError):
        error, reason = _said(exc), exc.reason
        delay_s = (exc.delay_s or 0.0) if isinstance(exc, Retry) else 0.0
    else:
        error = f"{type(exc).__name__}: {_said(exc)}"
        tb = "".join(traceback.format_exception(exc))
    if job.attempt < job.max_attempts:
        return Settlement(
            "retry",
            error=error,
            traceback=tb,
            delay_s=delay_s or retry_delay_s(job.retry_delays_s, job.attempt),
            reason=reason,
        )
    return Settlement(
        "dead",
        error=f"{error} (attempt {job.attempt} of {job.max_attempts})",
        traceback=tb,
        reason=reason,
    )


async def finish(
    scripts: Scripts,
    keys: Keys,
    job: Job,
    s: Settlement,
    result_ttl_s: int,
    stats: Stats,
    replicas: ReplicaWait | None = None,
    batcher: ScriptBatcher | None = None,
) -> str | None:
    """Apply with the fencing token (and count it, in the same script); keep trying through a
    Redis outage for one lease; with `replicas`, wait for one to acknowledge (WAIT) so the
    settlement survives a failover. With `batcher` and no replica to wait for (the cached
    count), the call shares one round trip with the other settlements of this loop turn.

    Returns the outcome applied: `s.outcome`, or "cancelled" when the job was cancelled while
    this attempt ran and `s.outcome` would have brought it back (retry, postpone, release).
    None means refused (stale token: logged and counted here) or given up: the lease will
    bring the job back."""
    deadline = time.monotonic() + max(job.lease_ms / 1000, 5)
    ran_s = time.time() - job.started_ms / 1000 if job.started_ms else 0.0
    stat_keys, stat_args = stats.settle_counters(job.queue, job.task, s.outcome, ran_s)
    args = [
        job.id,
        job.token or "",
        s.outcome,
        s.result,
        s.error[:2000],
        s.traceback[-8000:],
        result_ttl_s,
        int(s.delay_s * 1000),
        EVENTS_MAXLEN,
        *stat_args,
        s.reason,
        stats.cancelled_field(job.queue, job.task),
    ]
    all_keys = [*settle_keys(keys, job), *stat_keys]
    while True:
        try:
            lone = replicas is None or not await replicas.replicas(all_keys[0])
            if batcher is not None and lone:
                try:
                    applied = await batcher.call(scripts.finish, all_keys, args)
                except RedisError:
                    if replicas is not None:
                        replicas.forget()  # a failover may have brought replicas
                    raise
            elif replicas is not None:
                applied = await replicas.script(scripts.finish, all_keys, args)
            else:
                applied = await scripts.finish(keys=all_keys, args=args)
            break
        except RedisError as exc:
            if time.monotonic() > deadline:
                log.error(
                    "job %s: could not settle (%s); its lease will bring it back", job.id, exc
                )
                return None
            await asyncio.sleep(0.5)
    if not applied:  # 0: the token is stale
        with contextlib.suppress(RedisError):
            await stats.fenced(job.queue, job.task)
        log.warning("job %s: %s refused, token %s is stale (another worker owns it); "
                    "result discarded", job.id, s.outcome, job.token)  # fmt: skip
        return None
    return text(applied)
