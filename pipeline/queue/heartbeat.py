"""The worker registry: who is alive, how many slots each uses, which jobs it holds.

Heartbeats only inform (`pipeline status`, the dashboard, a client waiting on a queue nobody
serves); correctness rests on leases, so a worker that misses heartbeats loses nothing until
its leases run out. They are sent from the liveness thread (liveness.py) on a synchronous
connection, so a worker whose event loop is blocked still shows as alive.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

import redis as syncredis
from redis.asyncio import Redis

from pipeline.redis.connection import hash_reply, texts
from pipeline.redis.keys import Keys


def beat(
    redis: syncredis.Redis,
    keys: Keys,
    worker_id: str,
    *,
    queues: list[str],
    concurrency: int,
    jobs: list[str],
    interval_s: float,
    started_ms: int,
    state: str = "running",
) -> None:
    """Record this worker as alive for three intervals: its queues, slots and jobs."""
    now_ms = int(time.time() * 1000)
    with redis.pipeline(transaction=True) as pipe:
        pipe.hset(
            keys.worker(worker_id),
            mapping={
                "id": worker_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "queues": json.dumps(queues),
                "concurrency": concurrency,
                "slots_used": len(jobs),
                "jobs": json.dumps(jobs[:100]),
                "heartbeat_ms": now_ms,
                "started_ms": started_ms,
                "state": state,
            },
        )
        pipe.expire(keys.worker(worker_id), max(1, int(interval_s * 3 + 1)))
        pipe.zadd(keys.workers, {worker_id: now_ms})
        pipe.execute()


async def leave(redis: Redis, keys: Keys, worker_id: str) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.worker(worker_id))
        pipe.zrem(keys.workers, worker_id)
        await pipe.execute()


async def list_workers(redis: Redis, keys: Keys, interval_s: float) -> list[dict[str, Any]]:
    """Live workers; entries silent for three intervals are dropped from the registry."""
    cutoff = int((time.time() - 3 * interval_s) * 1000)
    await redis.zremrangebyscore(keys.workers, "-inf", cutoff)
    ids = texts(await redis.zrange(keys.workers, 0, -1))
    out: list[dict[str, Any]] = []
    for worker_id in ids:
        h: dict[str, Any] = hash_reply(await redis.hgetall(keys.worker(worker_id)))
        if h:
            h["queues"] = json.loads(h.get("queues", "[]"))
            h["jobs"] = json.loads(h.get("jobs", "[]"))
            for name in ("concurrency", "slots_used", "heartbeat_ms", "started_ms", "pid"):
                h[name] = int(h.get(name, 0))
            out.append(h)
    return out
