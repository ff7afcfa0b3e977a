"""A job as stored in Redis (one hash per job), its states, and the options of one enqueue.

Fields are written by the Lua scripts, never read-modify-written from Python; this module only
reads them back into a typed record. How long values are laid out in the hash (arguments in
pieces, the idempotency key as a digest) is record.py's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from pipeline.queue.record import joined


class State(StrEnum):
    QUEUED = "queued"  # in its queue, visible to every worker
    SCHEDULED = "scheduled"  # delayed start or retry back-off
    WAITING = "waiting"  # a chord callback waiting for its group
    ACTIVE = "active"  # claimed, leased to one worker
    COMPLETE = "complete"
    FAILED = "failed"  # a permanent error: not retried
    DEAD = "dead"  # attempts used up; in the dead-letter set, can be requeued
    CANCELLED = "cancelled"
    OVER_BUDGET = "over_budget"  # refused by a budget before anything was paid


TERMINAL = frozenset({State.COMPLETE, State.FAILED, State.DEAD, State.CANCELLED, State.OVER_BUDGET})

PRIORITIES = {"low": 0, "normal": 5, "high": 9}


def parse_priority(value: int | str) -> int:
    """0-9, 9 runs first; also `low`, `normal`, `high`."""
    if isinstance(value, str):
        if value.lower() in PRIORITIES:
            return PRIORITIES[value.lower()]
        if not value.isdigit():
            raise ValueError(f"priority {value!r}: use 0-9 or one of {', '.join(PRIORITIES)}")
        value = int(value)
    if not 0 <= value <= 9:
        raise ValueError(f"priority {value}: use 0-9 (9 runs first)")
    return value


@dataclass(frozen=True)
class JobOptions:
    """Options of one enqueue, kept apart from the task's own arguments. Only what is set
    here is stored on the job (as its `options`); expected duration, timeout and attempts
    left unset are resolved by the worker that claims the job, from its own task definition.
    `queue` and `priority` unset come from the task's definition when the job is enqueued."""

    idempotency_key: str | None = None
    priority: int | str | None = None
    delay_s: float | None = None
    at: datetime | None = None
    expected_duration_s: float | None = None
    timeout_s: float | None = None
    max_attempts: int | None = None
    queue: str | None = None
    batch: str | None = None
    hints: dict[str, Any] = field(default_factory=dict)  # seen by admission gates
    job_id: str | None = None


def _int(value: str | None, default: int = 0) -> int:
    return int(value) if value not in (None, "") else default


def _float(value: str | None, default: float = 0.0) -> float:
    return float(value) if value not in (None, "") else default


# JobOptions field -> the key it has in a job's `options` (the caller's explicit choices)
EXPLICIT_OPTIONS = {
    "expected_duration_s": "expected_s",
    "timeout_s": "timeout_s",
    "max_attempts": "max_attempts",
}


@dataclass(slots=True)  # no instance dict: ~1.5 KB less per running job (35 fields)
class Job:
    """A job as stored in its Redis hash: what to run (task, args), how (queue, priority,
    attempts, expected and timeout seconds, retry delays), and where it stands (state,
    attempt, lease, result, error and its typed `reason`). Times are Redis-clock ms.

    `options` holds only what the enqueuing caller set ({expected_s, timeout_s,
    max_attempts}); `expected_s`, `timeout_s`, `max_attempts` and `retry_delays_s` are what
    the job runs under, resolved at each claim from those and the claiming worker's own task
    definition (0 / [] until a worker first claimed it)."""

    id: str
    task: str
    queue: str
    state: State
    args: list[Any]
    kwargs: dict[str, Any]
    priority: int
    attempt: int
    max_attempts: int
    expected_s: float
    timeout_s: float
    retry_delays_s: list[float]
    batch: str | None = None
    hints: dict[str, Any] = field(default_factory=dict)
    token: str | None = None
    worker: str | None = None
    lease_ms: int = 0
    lease_deadline_ms: int | None = None
    created_ms: int = 0
    started_ms: int | None = None
    finished_ms: int | None = None
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    reason: str | None = None  # a pipeline.errors.Reason: why it ended or waits
    cancel_requested: bool = False
    group: str | None = None
    group_index: int | None = None
    callback_id: str | None = None
    callback_queue: str | None = None
    chord: str | None = None  # set on a chord callback: the group whose results it receives
    progress: Any = None
    lease_expiries: int = 0
    # The digest of the key the enqueue carried (record.py idempotency_digest), not the key:
    # 32 hex digits, so the record stays a compact listpack whatever the caller's key.
    idempotency_key: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> Job:
        options = json.loads(h.get("options") or "{}")
        return cls(
            id=h["id"],
            task=h.get("task", ""),
            queue=h.get("queue", "default"),
            state=State(h.get("state", "queued")),
            args=json.loads(joined(h, "args") or "[]"),
            kwargs=json.loads(joined(h, "kwargs") or "{}"),
            priority=_int(h.get("priority"), 5),
            attempt=_int(h.get("attempt")),
            max_attempts=_int(h.get("max_attempts"), int(options.get("max_attempts", 0))),
            expected_s=_float(h.get("expected_s"), float(options.get("expected_s", 0.0))),
            timeout_s=_float(h.get("timeout_s"), float(options.get("timeout_s", 0.0))),
            retry_delays_s=json.loads(h.get("retry_delays_s") or "[]"),
            batch=h.get("batch") or None,
            hints=json.loads(h.get("hints") or "{}"),
            token=h.get("token") or None,
            worker=h.get("worker") or None,
            lease_ms=_int(h.get("lease_ms")),
            lease_deadline_ms=_int(h.get("lease_deadline_ms")) or None,
            created_ms=_int(h.get("created_ms")),
            started_ms=_int(h.get("started_ms")) or None,
            finished_ms=_int(h.get("finished_ms")) or None,
            result=json.loads(h["result"]) if h.get("result") else None,
            error=h.get("error") or None,
            traceback=h.get("traceback") or None,
            reason=h.get("reason") or None,
            cancel_requested=h.get("cancel") == "1",
            group=h.get("group") or None,
            group_index=_int(h.get("group_index"), -1) if h.get("group_index") else None,
            callback_id=h.get("callback_id") or None,
            callback_queue=h.get("callback_queue") or None,
            chord=h.get("chord") or None,
            progress=json.loads(h["progress"]) if h.get("progress") else None,
            lease_expiries=_int(h.get("lease_expiries")),
            idempotency_key=h.get("idempotency_key") or None,
            options=options,
        )

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view for `pipeline status --json` and the HTTP API."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "token"}
        out["state"] = self.state.value
        return out
