"""A job as stored in Redis (one hash per job), its states, and the options of one enqueue.

Fields are written by the Lua scripts, never read-modify-written from Python; this module only
reads them back into a typed record. How long values are laid out in the hash (arguments in
pieces, the idempotency key as a digest) is record.py's.
"""

from __future__ import annotations

import json
import sys
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


_loads = json.loads


# A task's, a queue's and a worker's name repeat in every job of theirs: one string shared
# while any such job is held (interned strings are freed with their last holder), not three
# copies per running job (~200 B of a sleeping job's ~3.6 KB in the worker, tracemalloc).
_shared = sys.intern


def _json(value: str | None, empty: Any) -> Any:
    """A JSON field; `empty` (a fresh [] or {}) for an absent, empty or empty-literal one,
    which most jobs' kwargs, hints, options and retry delays are: no parse for those (a
    claim reads ~35 fields per job, and JSON decoding was most of it)."""
    if not value or value == "{}" or value == "[]":
        return empty
    return _loads(value)


def _int(value: str | None, default: int = 0) -> int:
    return int(value) if value not in (None, "") else default


_NUMBERS: dict[tuple[type, str], int | float] = {}  # a task's lease, expected, timeout
_NUMBERS_MAX = 256  # distinct texts kept (a few per task definition)


def _same(value: str | None, kind: type[int] | type[float], default: int | float = 0) -> Any:
    """A number every job of a task has alike (its lease_ms, expected_s, timeout_s), one
    object for them all: a float or a large int of its own is 32 B a running job."""
    if value in (None, ""):
        return default
    number = _NUMBERS.get((kind, value))
    if number is None:
        if len(_NUMBERS) >= _NUMBERS_MAX:
            _NUMBERS.clear()
        number = _NUMBERS[kind, value] = kind(value)
    return number


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
        get = h.get
        options = _json(get("options"), {})
        args = get("args")
        if args is not None and "args.1" in h:  # stored in pieces (record.py)
            args = joined(h, "args")
        kwargs = get("kwargs")
        if kwargs is not None and "kwargs.1" in h:
            kwargs = joined(h, "kwargs")
        group_index = get("group_index")
        return cls(
            id=h["id"],
            task=_shared(get("task", "")),
            queue=_shared(get("queue", "default")),
            state=State(get("state", "queued")),
            args=_json(args, []),
            kwargs=_json(kwargs, {}),
            priority=_int(get("priority"), 5),
            attempt=_int(get("attempt")),
            max_attempts=_int(get("max_attempts"), int(options.get("max_attempts", 0))),
            expected_s=_same(get("expected_s"), float, float(options.get("expected_s", 0.0))),
            timeout_s=_same(get("timeout_s"), float, float(options.get("timeout_s", 0.0))),
            retry_delays_s=_json(get("retry_delays_s"), []),
            batch=get("batch") or None,
            hints=_json(get("hints"), {}),
            token=get("token") or None,
            worker=_shared(get("worker") or "") or None,
            lease_ms=_same(get("lease_ms"), int),
            lease_deadline_ms=_int(get("lease_deadline_ms")) or None,
            created_ms=_int(get("created_ms")),
            started_ms=_int(get("started_ms")) or None,
            finished_ms=_int(get("finished_ms")) or None,
            result=_loads(h["result"]) if get("result") else None,
            error=get("error") or None,
            traceback=get("traceback") or None,
            reason=get("reason") or None,
            cancel_requested=get("cancel") == "1",
            group=get("group") or None,
            group_index=_int(group_index, -1) if group_index else None,
            callback_id=get("callback_id") or None,
            callback_queue=get("callback_queue") or None,
            chord=get("chord") or None,
            progress=_loads(h["progress"]) if get("progress") else None,
            lease_expiries=_int(get("lease_expiries")),
            idempotency_key=get("idempotency_key") or None,
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
