"""What every benchmarked job does besides sleeping: push one JSON event to Redis.

The four systems run the same task bodies, so the driver measures them all the same way:
a job's start and end land in the list `peers:events` of the database the run owns, as
`[kind, tag, unix_time_s, pid]`. A tag seen starting twice is a duplicate execution. This
module imports only redis-py and the standard library so it loads in both virtualenvs.

Each process (and event loop) records over one connection of its own: a client with a pool
opens a connection per concurrent push, so 40 jobs starting together grew it to 20-37
connections of 22-24 KB each, and the figure "memory per waiting slow job" measured the
recorder's connections (how many depended on how closely a system's jobs start together)
rather than the system's own memory per job.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

EVENTS = "peers:events"
READY = "peers:ready"

_sync: Any = None
_async: dict[int, Any] = {}


def _url() -> str:
    return os.environ["PEERS_REDIS_URL"]


def record(kind: str, tag: str) -> None:
    """Synchronous push, for Celery and RQ tasks (redis-py reconnects after a fork by itself)."""
    global _sync
    if _sync is None:
        import redis

        _sync = redis.Redis.from_url(_url(), single_connection_client=True)
    _sync.rpush(EVENTS, json.dumps([kind, tag, time.time(), os.getpid()]))


async def arecord(kind: str, tag: str) -> None:
    """Asynchronous push, for ARQ and pipeline tasks; one client per event loop."""
    import asyncio

    import redis.asyncio as aioredis

    loop_id = id(asyncio.get_running_loop())
    client = _async.get(loop_id)
    if client is None:
        client = _async[loop_id] = aioredis.Redis.from_url(_url(), single_connection_client=True)
    await client.rpush(EVENTS, json.dumps([kind, tag, time.time(), os.getpid()]))


def mark_ready(name: str) -> None:
    """A worker says it is listening, so the traps start with every worker idle."""
    import redis

    redis.Redis.from_url(_url()).rpush(READY, name)
