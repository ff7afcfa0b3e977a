"""What the enqueue scripts are sent: one job's keys and arguments for enqueue.lua, or many
jobs' for one call of enqueue_many.lua, which creates each exactly as enqueue.lua would (both
run _create.lua's create_job).

A job is prepared once (`Preparer.prepare`: placed, its arguments JSON-encoded) and then laid
out for either script (`one_call`, `many_call`). Its fields come in two parts: its `Shape`,
what every job of one task enqueued with the same options shares (queue, priority, start,
the options' fields), prepared once per bulk call and sent once per script call; and its own
fields (arguments, hints, idempotency digest, chord fields).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from operator import attrgetter
from typing import Any

from pipeline.queue.handoff import FIRST_LEASE_MS
from pipeline.queue.job import EXPLICIT_OPTIONS, NO_OPTIONS, JobOptions
from pipeline.queue.record import LISTPACK_VALUE_BYTES, idempotency_digest, spread
from pipeline.queue.registry import Placer
from pipeline.queue.task import Call, dumps
from pipeline.redis.keys import EVENTS_MAXLEN, Keys

# The options a Shape depends on: all but the job's own (hints too: a dict, not hashable, and
# in a bulk call often one per job, as the tokens a document's call may take)
_shape_options = attrgetter(*(f.name for f in fields(JobOptions)
                              if f.name not in {"idempotency_key", "job_id", "hints"}))  # fmt: skip

# Jobs per enqueue_many.lua call. Redis runs one script at a time: at 15-20 us per plain job
# and 30-37 us per document job (idempotency key, arguments in pieces, hints; INFO
# commandstats, 2026-11-30) a call holds it for 2-4 ms, within the ~5 ms we allow one script;
# the calls of a chunk still share one round trip.
SCRIPT_JOBS = 100
# The most kinds of call whose shape one enqueuing process keeps (Preparer._local).
LOCAL_SHAPES = 256


@dataclass(frozen=True, slots=True)
class Shape:
    """What the jobs of one task enqueued with equal options share: where they go, when they
    start, their idempotency TTL (0: no key), and those fields (names and values)."""

    queue: str
    priority: int
    ttl_s: int
    run_at_ms: int  # an absolute start (`at`), 0 for none
    delay_ms: int  # a start relative to the Redis clock at enqueue, 0 for none
    fields: tuple[str, ...]


@dataclass(slots=True)
class Prepared:
    """One job ready to send: its id, shape and own fields (names and values)."""

    id: str
    shape: Shape
    idempotency_key: str | None  # the caller's key; the digest stands for it in Redis
    digest: str  # '' without a key
    fields: list[str]

    @property
    def queue(self) -> str:
        return self.shape.queue


class Preparer:
    """Prepares calls for the enqueue scripts: placed (Placer: UnknownTask), arguments as JSON
    (NotSerializable), the caller's explicit options, the idempotency digest."""

    def __init__(self, placer: Placer, keys: Keys, idempotency_ttl_s: int) -> None:
        self.placer, self.keys, self.idempotency_ttl_s = placer, keys, idempotency_ttl_s
        # the shapes of calls of tasks imported here, kept across calls: each entry holds its
        # task, so the task's id in the key cannot be taken by another object meanwhile
        self._local: dict[tuple[Any, ...], tuple[Any, Shape]] = {}
        # enqueue.lua's KEYS that are the same for every job, named once (each is a string
        # built on use: eight of them were ~2.5 us of an enqueue)
        k = keys
        self._fixed = (k.delayed, k.seq, k.events, k.queues, k.idle, k.idle_workers, k.active,
                       k.fence)  # fmt: skip

    def _local_shape(self, kind: tuple[Any, ...], call: Call) -> Shape | None:
        known = self._local.get(kind)
        if known is not None and known[0] is call.task:
            return known[1]
        if len(self._local) >= LOCAL_SHAPES:  # kinds of call a process makes are few
            self._local.clear()
        return None

    async def prepare(
        self,
        call: Call,
        job_id: str,
        extra: dict[str, str] | None = None,
        shapes: dict[tuple[Any, ...], Shape] | None = None,
    ) -> Prepared:
        """The job's fields: where it goes (queue, priority) and what the caller set; how it
        runs is resolved by the worker that claims it (registry.py). `shapes` keeps the shapes
        made for earlier calls (one bulk call's: a call is placed as the first of its kind)."""
        if shapes is None and call.task is None:
            shape = await self._shape(call)
        else:
            kind = _kind(call)
            if shapes is None:  # a task imported here: placed by its own definition, always
                known = self._local_shape(kind, call)
                if known is None:
                    shape = await self._shape(call)
                    self._local[kind] = (call.task, shape)
                else:
                    shape = known
            else:
                known = shapes.get(kind)
                shape = known if known is not None else await self._shape(call)
                shapes[kind] = shape
        return _prepared(call, job_id, shape, extra)

    def prepare_known(self, call: Call, job_id: str) -> Prepared | None:
        """`prepare(call, job_id)` without awaiting (one coroutine less on an enqueue's path):
        for a call of a task imported here whose shape an earlier call made; None otherwise.
        Raises NotSerializable as `prepare` does."""
        if call.task is None:
            return None
        shape = self._local_shape(_kind(call), call)
        return None if shape is None else _prepared(call, job_id, shape, None)

    async def _shape(self, call: Call) -> Shape:
        place = await self.placer.place(call)
        o = call.options
        fields = ["task", call.task_name, "queue", place.queue, "priority", str(place.priority),
                  "options", _explicit(o), "batch", o.batch or ""]  # fmt: skip
        if not o.hints:
            fields += ("hints", "{}")
        if not call.kwargs:
            fields += ("kwargs", "{}")
        if not o.idempotency_key:
            fields += ("idempotency_key", "")
        return Shape(place.queue, place.priority,
                     self.idempotency_ttl_s if o.idempotency_key else 0,
                     int(o.at.timestamp() * 1000) if o.at is not None else 0,
                     int((o.delay_s or 0) * 1000), tuple(fields))  # fmt: skip

    def one_call(
        self, job: Prepared, state: str = "queued", replaced: str | None = None
    ) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of enqueue.lua for `job`, first `state` queued or waiting (a chord's
        callback), taking over the idempotency key of the job `replaced` if given."""
        k, s = self.keys, job.shape
        q = _queue_keys(k, s.queue)
        idem, legacy = self._idempotency_keys(job)
        delayed, seq, events, queues, idle, idle_workers, active, fence = self._fixed
        keys = [k.job(job.id), q[0], delayed, idem, seq, events, q[1], queues, legacy, idle,
                idle_workers, active, fence]  # fmt: skip
        args: list[Any] = [job.id, s.ttl_s, s.run_at_ms, s.priority, state, EVENTS_MAXLEN,
                s.queue, s.delay_ms, replaced or "", FIRST_LEASE_MS, os.urandom(4).hex(),
                *s.fields, *job.fields]  # fmt: skip
        return keys, args

    def many_call(self, jobs: Sequence[Prepared]) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of enqueue_many.lua for `jobs` (at most SCRIPT_JOBS of them, so one
        call holds Redis for a few ms at most), created queued, in order."""
        k = self.keys
        shapes = list({id(job.shape): job.shape for job in jobs}.values())
        number = {id(shape): i for i, shape in enumerate(shapes, 1)}
        queues = list(dict.fromkeys(shape.queue for shape in shapes))
        keys = [k.delayed, k.seq, k.events, k.queues, k.idle, k.idle_workers, k.active, k.fence]
        for queue in queues:
            keys += _queue_keys(k, queue)
        args: list[Any] = [EVENTS_MAXLEN, FIRST_LEASE_MS, os.urandom(4 * len(jobs)).hex(),
                           len(queues), len(shapes)]  # fmt: skip
        for s in shapes:
            args += (s.queue, queues.index(s.queue) + 1, s.priority, s.ttl_s, s.run_at_ms,
                     s.delay_ms, len(s.fields), *s.fields)  # fmt: skip
        for job in jobs:
            keys += (k.job(job.id), *self._idempotency_keys(job))
            args += (job.id, number[id(job.shape)], len(job.fields), *job.fields)
        return keys, args

    def _idempotency_keys(self, job: Prepared) -> tuple[str, str]:
        """The job's idempotency key by digest, and by the caller's key as it was named
        before it was a digest (read while such keys can exist); placeholders without one."""
        k = self.keys
        if not job.idempotency_key:
            return _unused(k)
        return k.idempotency(job.digest), k.idempotency_by_key(job.idempotency_key)


def _kind(call: Call) -> tuple[Any, ...]:
    """What a call's shape depends on (Preparer's shapes are kept by it)."""
    o = call.options
    if o is NO_OPTIONS:  # the common case: no tuple of the nine options to build and hash
        return (call.task_name, id(call.task), None, True, not call.kwargs, True)
    return (call.task_name, id(call.task), _shape_options(o), not o.idempotency_key,
            not call.kwargs, not o.hints)  # fmt: skip


def _prepared(call: Call, job_id: str, shape: Shape, extra: dict[str, str] | None) -> Prepared:
    """The job's own fields beside its shape: arguments as JSON (NotSerializable), hints,
    the idempotency digest, `extra` (a chord's fields)."""
    o, name = call.options, call.task_name
    fields: list[str] = []
    _spread_into(fields, "args", dumps(call.args, f"arguments of {name}"))
    if call.kwargs:
        _spread_into(fields, "kwargs", dumps(call.kwargs, f"keyword arguments of {name}"))
    if o.hints:
        fields += ("hints", dumps(o.hints, "job hints"))
    digest = ""
    if o.idempotency_key:
        digest = idempotency_digest(o.idempotency_key)
        fields += ("idempotency_key", digest)
    if extra:
        for item in extra.items():
            fields += item
    return Prepared(job_id, shape, o.idempotency_key, digest, fields)


def new_job_ids(count: int) -> list[str]:
    """`count` new job ids, each a random (version 4) UUID as 32 hex digits, as uuid4().hex
    makes, from one read of os.urandom (a quarter of uuid4's cost per id, in bulk)."""
    raw = os.urandom(16 * count).hex()
    ids = []
    for i in range(0, 32 * count, 32):
        h = raw[i : i + 32]  # the version nibble is 4, the variant bits 10 (RFC 4122)
        ids.append(f"{h[:12]}4{h[13:16]}{'89ab'[int(h[16], 16) & 3]}{h[17:]}")
    return ids


def _spread_into(fields: list[str], name: str, value: str) -> None:
    if len(value) <= LISTPACK_VALUE_BYTES and value.isascii():  # the common case: one field
        fields += (name, value)
    else:
        for item in spread(name, value).items():
            fields += item


def _explicit(o: JobOptions) -> str:
    """The options the caller set explicitly, as the JSON stored in the job's `options`."""
    explicit = {key: getattr(o, name) for name, key in EXPLICIT_OPTIONS.items()
                if getattr(o, name) is not None}  # fmt: skip
    return dumps(explicit, "job options") if explicit else "{}"


@lru_cache(maxsize=64)
def _unused(k: Keys) -> tuple[str, str]:
    return k.unused, k.unused


@lru_cache(maxsize=256)
def _queue_keys(k: Keys, queue: str) -> tuple[str, str]:
    """A queue's zset and wake list (Keys is frozen: hashable)."""
    return k.queue(queue), k.wake(queue)
