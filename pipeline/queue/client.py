"""The producer side: enqueue jobs and chords, follow them, cancel or requeue them.

Every state change goes through one Lua script (scripts.py); this module calls them with the
keys and arguments enqueue_args.py prepares, and reads records back.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from pipeline.errors import JobFailed, JobNotFound
from pipeline.queue.enqueue_args import (
    SCRIPT_JOBS,
    Prepared,
    Preparer,
    Shape,
    new_job_ids,
)
from pipeline.queue.job import NO_OPTIONS, Job, JobOptions, State
from pipeline.queue.record import idempotency_digest
from pipeline.queue.registry import Placer
from pipeline.queue.scripts import Scripts, group_keys
from pipeline.queue.task import REGISTRY, Call, Task
from pipeline.redis.connection import connect_redis, hash_reply, text, texts
from pipeline.redis.keys import EVENTS_MAXLEN, Keys
from pipeline.redis.replication import ReplicaWait, pipelined
from pipeline.settings import Settings, get_settings

if TYPE_CHECKING:
    from pipeline.queue.follow import Event


class QueueClient:
    """The producer's side of the queue: enqueue jobs (one, many, or a chord), look them up,
    follow their events, cancel and requeue them. One per process; cheap to share.

    `connect()` reads PIPELINE_REDIS_URL (or starts the embedded Redis). Raises
    RedisUnavailable when Redis cannot be reached, UnknownTask for a task name no worker
    registers, NotSerializable for arguments that are not JSON, JobNotFound for an unknown id.
    """

    def __init__(self, redis: Redis, keys: Keys | None = None, settings: Settings | None = None):
        self.redis = redis
        self.settings = settings or get_settings()
        self.keys = keys or Keys(self.settings.key_prefix)
        self.scripts = Scripts(redis)
        self.placer = Placer(redis, self.keys)
        self.replicas = ReplicaWait(redis)
        self.preparer = Preparer(self.placer, self.keys, self.settings.idempotency_ttl_s)

    @classmethod
    async def connect(
        cls, settings: Settings | None = None, *, long_lived: bool = False,
        read_only: bool = False,
    ) -> QueueClient:  # fmt: skip
        """Connect to PIPELINE_REDIS_URL, or to (starting if needed) the embedded Redis;
        `read_only` (a command that only looks) never starts it and raises RedisNotRunning
        when it is not running.

        Long-lived processes (workers, the API, `run`) ride out a Redis restart with ~30 s of
        retries; a one-shot command gives up after a few and says so.
        """
        from pipeline.redis.server import ensure_redis_url, running_redis_url

        settings = settings or get_settings()
        url = running_redis_url(settings) if read_only else ensure_redis_url(settings)
        redis = connect_redis(url, retries=20 if long_lived else 3)
        return cls(redis, Keys(settings.key_prefix), settings)

    async def aclose(self) -> None:
        await self.redis.aclose()

    # -- enqueue -------------------------------------------------------------------------
    def _call(
        self,
        target: Task | str | Call,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        options: JobOptions | None,
    ) -> Call:
        if isinstance(target, Call):
            call = target
        else:
            name = target.name if isinstance(target, Task) else target
            task = target if isinstance(target, Task) else REGISTRY.get(name)
            call = Call(name, list(args), dict(kwargs), NO_OPTIONS, task=task)
        if options is not None:
            call = replace(call, options=options)
        return call

    async def _prepare(
        self, call: Call, job_id: str | None = None, extra: dict[str, str] | None = None
    ) -> Prepared:
        return await self.preparer.prepare(call, job_id or call.options.job_id
                                           or new_job_ids(1)[0], extra)  # fmt: skip

    async def enqueue(
        self,
        target: Task | str | Call,
        *args: Any,
        _options: JobOptions | None = None,
        **kwargs: Any,
    ) -> JobHandle:
        """Enqueue `target(*args, **kwargs)`; an idempotency key seen before returns that job.

        `target` is a Task, a Call, or a task name: a name this process did not import is
        placed by the options a worker published, and raises UnknownTask when none did
        (unless `_options` names the queue). With replicas, returns once one acknowledged.
        """
        call = self._call(target, args, kwargs, _options)
        job = (self.preparer.prepare_known(call, call.options.job_id or new_job_ids(1)[0])
               or await self._prepare(call))  # fmt: skip
        keys, argv = self.preparer.one_call(job)
        created, real_id = await self.replicas.script(self.scripts.enqueue, keys, argv)
        return JobHandle(self, real_id, created=bool(created))

    async def enqueue_replacing(
        self,
        replaced: str | None,
        target: Task | str | Call,
        *args: Any,
        _options: JobOptions,
        **kwargs: Any,
    ) -> JobHandle:
        """Enqueue a new job that takes over `_options.idempotency_key` from the job
        `replaced` (which ended without a result), atomically: later enqueues with that key
        get the new job. If the key names another job by now (a concurrent caller got there
        first), or `replaced` is None and the key exists, that job is returned, created=False.
        """
        if not _options.idempotency_key:
            raise ValueError("enqueue_replacing needs an idempotency key to take over")
        job = await self._prepare(self._call(target, args, kwargs, _options))
        keys, argv = self.preparer.one_call(job, replaced=replaced)
        created, real_id = await self.replicas.script(self.scripts.enqueue, keys, argv)
        return JobHandle(self, real_id, created=bool(created))

    async def enqueue_many(self, calls: Sequence[Call], *, chunk: int = 1000) -> list[JobHandle]:
        """Enqueue many calls in one round trip per `chunk` of them; one handle per call, in
        order. Each job is created exactly as `enqueue` creates it (enqueue_many.lua, up to
        SCRIPT_JOBS jobs per script call): an idempotency key seen before (in Redis, or
        earlier in `calls`) returns that job with `created` False. Raises what `enqueue`
        raises (UnknownTask, NotSerializable: before anything is sent); a RedisError may leave
        a chunk partly enqueued, and sending the same calls again is safe when they carry job
        ids or idempotency keys. With replicas, returns once one acknowledged each chunk."""
        shapes: dict[tuple[Any, ...], Shape] = {}  # prepared once per kind of call
        prepare = self.preparer.prepare
        jobs = [await prepare(call, call.options.job_id or new_id, None, shapes)
                for call, new_id in zip(calls, new_job_ids(len(calls)), strict=True)]  # fmt: skip
        handles: list[JobHandle] = []
        chunk = max(1, chunk)
        for start in range(0, len(jobs), chunk):
            part = jobs[start : start + chunk]
            scripts = [self.preparer.many_call(part[i : i + SCRIPT_JOBS])
                       for i in range(0, len(part), SCRIPT_JOBS)]  # fmt: skip
            for reply in await self.replicas.script_many(self.scripts.enqueue_many, scripts):
                handles += self._handles(reply)
        return handles

    def _handles(self, reply: list[Any]) -> list[JobHandle]:
        """Handles from enqueue_many.lua's reply: created, id, created, id, ..."""
        return [JobHandle(self, text(reply[i + 1]), created=bool(reply[i]))
                for i in range(0, len(reply), 2)]  # fmt: skip

    async def group(
        self, calls: Sequence[Call], then: Call, *, batch: str | None = None
    ) -> GroupHandle:
        """A chord: run `calls` in parallel, then `then(results, *its args)` exactly once.

        The callback receives one outcome per member, in order: {"id", "state", "result",
        "error"}; members that end failed, dead or cancelled count as finished too.
        Give the callback a `job_id` to make the chord idempotent: member ids derive from it,
        and asking again (a retried parent job) returns the chord that exists, enqueuing nothing.
        """
        if any(c.options.idempotency_key for c in calls):
            raise ValueError(
                "chord members cannot carry idempotency keys; give the callback a job_id"
            )
        cb_id = then.options.job_id or uuid.uuid4().hex
        member_ids = [f"{cb_id}.{i}" for i in range(len(calls))]
        existing = await self._existing_group(cb_id, member_ids)
        if existing is not None:
            return existing
        # The group id derives from the callback's, and every write below is a no-op when
        # its record exists (HSETNX; enqueue.lua returns an existing job): two processes
        # creating one chord at once make one chord, with no WATCH (which a Cluster pipeline
        # cannot do with reads in between).
        group_id = f"chord-{cb_id}"
        then = then.with_options(batch=then.options.batch or batch)
        callback = await self._prepare(then, cb_id, {"chord": group_id})
        prepared = [  # placed and serialised before the transaction: it must not wait
            self.preparer.one_call(callback, "waiting" if calls else "queued")
        ]
        for index, (call, member_id) in enumerate(zip(calls, member_ids, strict=True)):
            call = call.with_options(batch=call.options.batch or batch)
            member = await self._prepare(call, member_id, {
                "group": group_id, "group_index": str(index), "callback_id": cb_id,
                "callback_queue": callback.queue})  # fmt: skip
            prepared.append(self.preparer.one_call(member))
        # a Cluster pipeline does not load scripts before a transaction; a plain one does
        await self.redis.script_load(self.scripts.enqueue.script)
        group: dict[str, str | int] = {"total": len(calls), "done": 0, "callback": cb_id,
                 "created_ms": int(time.time() * 1000)}  # fmt: skip
        async with self.redis.pipeline(transaction=True) as pipe:
            for name, value in group.items():
                pipe.hsetnx(self.keys.group(group_id), name, value)
            for keys, argv in prepared:
                pipelined(pipe, self.scripts.enqueue, keys, argv)
            replies = await pipe.execute()
        await self.replicas.sync(self.keys.replication_probe)
        if not replies[len(group)][0]:  # the callback existed: another process made it
            found = await self._existing_group(cb_id, member_ids)
            assert found is not None
            return found
        members = [JobHandle(self, m) for m in member_ids]
        return GroupHandle(group_id, members, JobHandle(self, cb_id))

    async def _existing_group(self, cb_id: str, member_ids: list[str]) -> GroupHandle | None:
        chord = await self.redis.hget(self.keys.job(cb_id), "chord")
        if chord is None:
            return None
        members = [JobHandle(self, m, created=False) for m in member_ids]
        return GroupHandle(text(chord), members, JobHandle(self, cb_id, created=False))

    # -- read ----------------------------------------------------------------------------
    async def get(self, job_id: str) -> Job:
        h = hash_reply(await self.redis.hgetall(self.keys.job(job_id)))
        if not h:
            raise JobNotFound(f"no job {job_id!r} (unknown id, or its record expired)")
        return Job.from_hash(h)

    def job(self, job_id: str) -> JobHandle:
        return JobHandle(self, job_id)

    async def idempotent(self, keys: Sequence[str]) -> list[str | None]:
        """For each idempotency key, the job id it stands for now (what an enqueue with it
        would return instead of a new job, enqueue.lua), or None: read only, one round trip
        (MGET) for them all."""
        if not keys:
            return []
        k = self.keys
        names = [name for key in keys
                 for name in (k.idempotency(idempotency_digest(key)), k.idempotency_by_key(key))]
        found = await self.redis.mget(names)
        pairs = zip(found[::2], found[1::2], strict=True)
        return [text(by_digest or by_key) if (by_digest or by_key) else None
                for by_digest, by_key in pairs]  # fmt: skip

    async def group_results(self, group_id: str) -> list[Any]:
        import json

        raw = hash_reply(await self.redis.hgetall(self.keys.group_results(group_id)))
        return [json.loads(raw[i]) for i in sorted(raw, key=int)]

    async def depths(self) -> dict[str, Any]:
        """Queue depths by priority, plus delayed, active and dead-letter counts."""
        names = sorted(texts(list(await self.redis.smembers(self.keys.queues))))
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.zrange(self.keys.queue(name), 0, -1, withscores=True)
            pipe.zcard(self.keys.delayed)
            pipe.zcard(self.keys.active)
            pipe.zcard(self.keys.dead)
            out = await pipe.execute()
        queues: dict[str, Any] = {}
        for name, members in zip(names, out[: len(names)], strict=True):
            by_priority: dict[int, int] = {}
            for _, score in members:
                p = 9 - int(score // 1e12)
                by_priority[p] = by_priority.get(p, 0) + 1
            queues[name] = {"ready": len(members), "by_priority": by_priority}
        delayed, active, dead = out[len(names) :]
        return {"queues": queues, "delayed": delayed, "active": active, "dead": dead}

    async def dead_jobs(self, limit: int = 100) -> list[Job]:
        ids = texts(await self.redis.zrevrange(self.keys.dead, 0, limit - 1))
        jobs = []
        for job_id in ids:
            try:
                jobs.append(await self.get(job_id))
            except JobNotFound:
                await self.redis.zrem(self.keys.dead, job_id)
        return jobs

    async def workers(self) -> list[dict[str, Any]]:
        from pipeline.queue.heartbeat import list_workers

        return await list_workers(self.redis, self.keys, self.settings.heartbeat_interval_s)

    # -- change --------------------------------------------------------------------------
    async def cancel(self, job_id: str) -> str:
        """Cancel a job: `cancelled` at once when not running, `cancelling` when it is."""
        job = await self.get(job_id)
        k = self.keys
        keys = [k.job(job_id), k.queue(job.queue), k.delayed, k.events, *group_keys(k, job)]
        state = await self.scripts.cancel(
            keys=keys, args=[job_id, self.settings.result_ttl_s, EVENTS_MAXLEN]
        )
        if not state:
            raise JobNotFound(f"no job {job_id!r}")
        return str(state)

    async def requeue(self, job_id: str) -> bool:
        """Put a job that ended dead, failed, over_budget or cancelled back in its queue with
        fresh attempts; a chord member re-arms its group's callback."""
        job = await self.get(job_id)
        k = self.keys
        group = group_keys(k, job)
        keys = [k.job(job_id), k.dead, k.queue(job.queue), k.wake(job.queue), k.events,
                group[0], group[1], group[2]]  # fmt: skip
        return bool(await self.scripts.requeue(keys=keys, args=[job_id, EVENTS_MAXLEN]))

    # -- follow (follow.py, imported on use: a worker that never waits on a job does not
    # load it) ---------------------------------------------------------------------------
    async def last_event_id(self) -> str:
        from pipeline.queue import follow

        return await follow.last_event_id(self)

    def events(
        self,
        *,
        since: str | None = None,
        batch: str | None = None,
        block_ms: int = 1000,
        until: float | None = None,
    ) -> AsyncIterator[Event]:
        """Follow state changes live (optionally of one batch) without polling every job;
        until `until` (a time.monotonic() deadline), else for ever."""
        from pipeline.queue import follow

        return follow.events(self, since=since, batch=batch, block_ms=block_ms, until=until)

    async def wait(self, job_id: str, timeout_s: float | None = None) -> Job:
        """Wait until the job is terminal (JobTimeout past `timeout_s`); see follow.wait."""
        from pipeline.queue import follow

        return await follow.wait(self, job_id, timeout_s)


class JobHandle:
    """One enqueued job, by id: its record, state, result (`JobFailed` if it did not
    complete, `JobTimeout` past `timeout_s`) and cancellation. `created` is False when an
    idempotency key returned an existing job."""

    def __init__(self, client: QueueClient, job_id: str, created: bool = True) -> None:
        self.client = client
        self.id = job_id
        self.created = created  # False when an idempotency key returned an existing job

    def __repr__(self) -> str:
        return f"JobHandle({self.id!r})"

    async def info(self) -> Job:
        return await self.client.get(self.id)

    async def status(self) -> State:
        return (await self.info()).state

    async def result(self, timeout_s: float | None = None) -> Any:
        """The job's result; `JobFailed` if it ended otherwise, `JobTimeout` past the deadline."""
        job = await self.client.wait(self.id, timeout_s)
        if job.state != State.COMPLETE:
            raise JobFailed(job.id, job.state.value, job.error)
        return job.result

    async def cancel(self) -> str:
        return await self.client.cancel(self.id)


@dataclass(frozen=True)
class GroupHandle:
    """A chord: the member jobs and the callback that runs once, after every member ended."""

    id: str
    members: list[JobHandle]
    callback: JobHandle
