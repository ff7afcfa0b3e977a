"""A job as stored in Redis (one hash per job), its states, and the options of one enqueue.

Fields are written by the Lua scripts, never read-modify-written from Python; this module only
reads them back into a typed record. How long values are laid out in the hash (arguments in
pieces, the idempotency key as a digest) is record.py's.
"""

from __future__ import annotations

from collections.abc import Mapping
from copy import copy
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from pipeline.queue.job_values import (
    MAKING,
    RARE_DEFAULTS,
    OwnDict,
    Rare,
    RareField,
    int_field,
    json_field,
    loads,
    same_number,
    shared,
    time_ms,
)
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


# The options of a call made without any (frozen, its hints never written: read on the way
# to Redis): shared by every such call, and known by identity when its shape is looked up
# (enqueue_args._kind).
NO_OPTIONS = JobOptions()

_NONE: Mapping[str, Any] = MappingProxyType({})  # read-only: never kept by a job

# JobOptions field -> the key it has in a job's `options` (the caller's explicit choices)
EXPLICIT_OPTIONS = {
    "expected_duration_s": "expected_s",
    "timeout_s": "timeout_s",
    "max_attempts": "max_attempts",
}


# the record's fields, in order (repr, equality, to_dict)
FIELDS = ("id", "task", "queue", "state", "args", "kwargs", "priority", "attempt",
          "max_attempts", "expected_s", "timeout_s", "retry_delays_s", "batch", "hints", "token",
          "worker", "lease_ms", "lease_deadline_ms", "created_ms", "started_ms", "finished_ms",
          "result", "error", "traceback", "reason", "cancel_requested", "group", "group_index",
          "callback_id", "callback_queue", "chord", "progress", "lease_expiries",
          "idempotency_key", "options")  # fmt: skip


class Job:
    """A job as stored in its Redis hash: what to run (task, args), how (queue, priority,
    attempts, expected and timeout seconds, retry delays), and where it stands (state,
    attempt, lease, result, error and its typed `reason`). Times are Redis-clock ms.

    `options` holds only what the enqueuing caller set ({expected_s, timeout_s,
    max_attempts}); `expected_s`, `timeout_s`, `max_attempts` and `retry_delays_s` are what
    the job runs under, resolved at each claim from those and the claiming worker's own task
    definition (0 / [] until a worker first claimed it).

    Every field reads and writes as a plain attribute. What a running job holds is kept
    small, since a worker holds one per running job (issue 16, memory per waiting slow job):
    slots, no instance dict; `kwargs`, `hints` and `options` are made (empty, the job's own)
    when first read if the job has none; `retry_delays_s` is kept as its JSON text, shared by
    every job of its task, and parsed into a list of the job's own when first read; the
    fields most running jobs leave unset share one slot (`Rare`, job_values.py)."""

    __slots__ = ("_hints", "_kwargs", "_options", "_rare", "_retry_delays_s", "args", "attempt",
                 "batch", "created_ms", "expected_s", "id", "lease_deadline_ms", "lease_ms",
                 "max_attempts", "priority", "queue", "started_ms", "state", "task", "timeout_s",
                 "token", "worker")  # fmt: skip

    finished_ms = RareField[int | None](None)
    result = RareField[Any](None)
    error = RareField[str | None](None)
    traceback = RareField[str | None](None)
    reason = RareField[str | None](None)  # a pipeline.errors.Reason: why it ended or waits
    cancel_requested = RareField[bool](False)
    group = RareField[str | None](None)
    group_index = RareField[int | None](None)
    callback_id = RareField[str | None](None)
    callback_queue = RareField[str | None](None)
    chord = RareField[str | None](None)  # on a chord callback: the group whose results it gets
    progress = RareField[Any](None)
    lease_expiries = RareField[int](0)
    # The digest of the key the enqueue carried (record.py idempotency_digest), not the key:
    # 32 hex digits, so the record stays a compact listpack whatever the caller's key.
    idempotency_key = RareField[str | None](None)

    def __init__(
        self,
        id: str,
        task: str,
        queue: str,
        state: State,
        args: list[Any],
        kwargs: dict[str, Any] | None,  # None: none (an empty dict made when first read)
        priority: int,
        attempt: int,
        max_attempts: int,
        expected_s: float,
        timeout_s: float,
        retry_delays_s: list[float] | str,  # or its JSON text, parsed when first read
        batch: str | None = None,
        hints: dict[str, Any] | None = None,
        token: str | None = None,
        worker: str | None = None,
        lease_ms: int = 0,
        lease_deadline_ms: int | None = None,
        created_ms: int = 0,
        started_ms: int | None = None,
        finished_ms: int | None = None,
        result: Any = None,
        error: str | None = None,
        traceback: str | None = None,
        reason: str | None = None,
        cancel_requested: bool = False,
        group: str | None = None,
        group_index: int | None = None,
        callback_id: str | None = None,
        callback_queue: str | None = None,
        chord: str | None = None,
        progress: Any = None,
        lease_expiries: int = 0,
        idempotency_key: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.id, self.task, self.queue, self.state, self.args = id, task, queue, state, args
        self._kwargs, self._hints, self._options = kwargs, hints, options
        self.priority, self.attempt, self.max_attempts = priority, attempt, max_attempts
        self.expected_s, self.timeout_s = expected_s, timeout_s
        self._retry_delays_s = retry_delays_s
        self.batch, self.token, self.worker, self.lease_ms = batch, token, worker, lease_ms
        self.lease_deadline_ms, self.created_ms, self.started_ms = (
            lease_deadline_ms, created_ms, started_ms)  # fmt: skip
        rare = (finished_ms, result, error, traceback, reason, cancel_requested, group,
                group_index, callback_id, callback_queue, chord, progress, lease_expiries,
                idempotency_key)  # fmt: skip
        unset = all(v is default for v, default in zip(rare, RARE_DEFAULTS, strict=True))
        self._rare = None if unset else Rare(*rare)

    kwargs = OwnDict()
    hints = OwnDict()
    options = OwnDict()

    @property
    def call_kwargs(self) -> Mapping[str, Any]:
        """The keyword arguments to call its task with: `kwargs`, or a read-only empty mapping
        when it has none, without making the job a dict (the call unpacks them: the task gets
        a dict of its own either way)."""
        return self._kwargs or _NONE

    @property
    def retry_delays_s(self) -> list[float]:
        delays = self._retry_delays_s
        if isinstance(delays, str):
            with MAKING:
                if isinstance(delays := self._retry_delays_s, str):
                    delays = self._retry_delays_s = json_field(delays, [])
        return delays

    @retry_delays_s.setter
    def retry_delays_s(self, value: list[float]) -> None:
        self._retry_delays_s = value

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in FIELDS)
        return f"Job({shown})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __copy__(self) -> Job:
        """A shallow copy, as the dataclass's was: the fields' values shared, the rare part
        not (a field set on one of them would show in the other)."""
        twin = Job.__new__(Job)
        for name in Job.__slots__:
            setattr(twin, name, getattr(self, name))
        if (rare := self._rare) is not None:
            twin._rare = copy(rare)
        return twin

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> Job:
        get = h.get
        options = json_field(get("options"), None)
        chosen = options or _NONE  # the caller's choices stand in for a field not yet set
        args = get("args")
        if args is not None and "args.1" in h:  # stored in pieces (record.py)
            args = joined(h, "args")
        kwargs = get("kwargs")
        if kwargs is not None and "kwargs.1" in h:
            kwargs = joined(h, "kwargs")
        group_index = get("group_index")
        return cls(
            id=h["id"],
            task=shared(get("task", "")),
            queue=shared(get("queue", "default")),
            state=State(get("state", "queued")),
            args=json_field(args, []),
            kwargs=json_field(kwargs, None),
            priority=int_field(get("priority"), 5),
            attempt=int_field(get("attempt")),
            max_attempts=int_field(get("max_attempts"), int(chosen.get("max_attempts", 0))),
            expected_s=same_number(get("expected_s"), float, float(chosen.get("expected_s", 0.0))),
            timeout_s=same_number(get("timeout_s"), float, float(chosen.get("timeout_s", 0.0))),
            retry_delays_s=shared(get("retry_delays_s") or ""),
            batch=get("batch") or None,
            hints=json_field(get("hints"), None),
            token=get("token") or None,
            worker=shared(get("worker") or "") or None,
            lease_ms=same_number(get("lease_ms"), int),
            lease_deadline_ms=time_ms(get("lease_deadline_ms")),
            created_ms=time_ms(get("created_ms")) or 0,
            started_ms=time_ms(get("started_ms")),
            finished_ms=time_ms(get("finished_ms")),
            result=loads(h["result"]) if get("result") else None,
            error=get("error") or None,
            traceback=get("traceback") or None,
            reason=get("reason") or None,
            cancel_requested=get("cancel") == "1",
            group=get("group") or None,
            group_index=int_field(group_index, -1) if group_index else None,
            callback_id=get("callback_id") or None,
            callback_queue=get("callback_queue") or None,
            chord=get("chord") or None,
            progress=loads(h["progress"]) if get("progress") else None,
            lease_expiries=int_field(get("lease_expiries")),
            idempotency_key=get("idempotency_key") or None,
            options=options,
        )

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view for `pipeline status --json` and the HTTP API."""
        out = {name: getattr(self, name) for name in FIELDS if name != "token"}
        out["state"] = self.state.value
        return out
