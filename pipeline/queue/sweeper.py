"""Upkeep every worker runs: promote due delayed jobs, reclaim jobs whose lease expired.

Any number of workers may sweep at once; each script re-checks its condition atomically, so
a job is promoted or reclaimed once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from pipeline.queue.job import Job
from pipeline.queue.scripts import Scripts, settle_keys
from pipeline.queue.stats import Stats
from pipeline.redis.connection import hash_reply, text, texts
from pipeline.redis.keys import EVENTS_MAXLEN, Keys

log = logging.getLogger("pipeline.sweeper")

EXPIRED_OUTCOMES = {1: "requeued", 2: "dead", 3: "cancelled"}
NEVER_TAKEN = 4  # expire.lua: a hand-off its worker never took (handoff.py); not an attempt
LeaseExpiredHook = Callable[[Job, str], Awaitable[None]]


class Sweeper:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        scripts: Scripts,
        result_ttl_s: int,
        on_lease_expired: list[LeaseExpiredHook] | None = None,
    ) -> None:
        self.redis, self.keys, self.scripts = redis, keys, scripts
        self.result_ttl_s = result_ttl_s
        self.on_lease_expired = on_lease_expired or []
        self.stats = Stats(redis, keys)

    async def sweep(self) -> None:
        """One pass: promote due delayed jobs, then reclaim expired leases."""
        await self.promote_due()
        await self.reclaim_expired()

    async def _server_ms(self) -> int:
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def promote_due(self, limit: int = 500) -> int:
        now = await self._server_ms()
        ids = texts(
            await self.redis.zrangebyscore(self.keys.delayed, "-inf", now, start=0, num=limit)
        )
        promoted = 0
        for job_id in ids:
            raw_queue = await self.redis.hget(self.keys.job(job_id), "queue")
            if raw_queue is None:  # record expired: drop the orphan
                await self.redis.zrem(self.keys.delayed, job_id)
                continue
            queue, k = text(raw_queue), self.keys
            promoted += await self.scripts.promote(
                keys=[k.delayed, k.job(job_id), k.queue(queue), k.wake(queue), k.events],
                args=[job_id, EVENTS_MAXLEN],
            )
        return promoted

    async def held_by_gone(self, queues: list[str], live: set[str], limit: int = 500) -> bool:
        """Whether a running job of `queues` is held by a worker not in `live` (ids): its
        lease will expire and `reclaim_expired` put it back in its queue."""
        ids = texts(await self.redis.zrange(self.keys.active, 0, limit - 1))
        if not ids:
            return False
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(self.keys.job(job_id), ["queue", "worker"])
            held = await pipe.execute()
        return any(q is not None and text(q) in queues and (w is None or text(w) not in live)
                   for q, w in held)  # fmt: skip

    async def reclaim_expired(self, limit: int = 500) -> list[tuple[str, str]]:
        now = await self._server_ms()
        ids = texts(
            await self.redis.zrangebyscore(self.keys.active, "-inf", now, start=0, num=limit)
        )
        out = []
        for job_id in ids:
            h = hash_reply(await self.redis.hgetall(self.keys.job(job_id)))
            if not h:
                await self.redis.zrem(self.keys.active, job_id)
                continue
            job = Job.from_hash(h)
            own_wake = self.keys.worker_wake(job.worker) if job.worker else self.keys.unused
            code = await self.scripts.expire(
                keys=[*settle_keys(self.keys, job), own_wake],
                args=[job_id, self.result_ttl_s, EVENTS_MAXLEN],
            )
            if code == NEVER_TAKEN:
                log.info("job %s: handed to worker %s, which never took it; back in its "
                         "queue", job_id, job.worker)  # fmt: skip
            elif code:
                outcome = EXPIRED_OUTCOMES[int(code)]
                log.warning(
                    "job %s: lease expired on worker %s (attempt %d) -> %s",
                    job_id,
                    job.worker,
                    job.attempt,
                    outcome,
                )
                out.append((job_id, outcome))
                await self.stats.lease_expired(job.queue, outcome)
                for hook in self.on_lease_expired:
                    try:
                        await hook(job, outcome)
                    except Exception:
                        log.exception("lease-expired hook failed for job %s", job_id)
        return out
