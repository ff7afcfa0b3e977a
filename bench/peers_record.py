"""What every benchmarked job does besides sleeping: push one JSON event to Redis.

The four systems run the same task bodies, so the driver measures them all the same way:
a job's start and end land in the list `peers:events` of the database the run owns, as
`[kind, tag, unix_time_s, pid]`. A tag seen starting twice is a duplicate execution. This
module imports only redis-py and the standard library so it loads in both virtualenvs.

Each process (and event loop) records over a fixed set of RECORDER_CONNECTIONS connections,
all opened on its first event: a pool that grows on demand opened a connection per
concurrent push, so 40 jobs starting together grew it to 20-37 connections of 22-24 KB each
after the idle reading, and "memory per waiting slow job" measured the recorder's connections
(how many depended on how closely a system's jobs start together) rather than the system's
own memory per job. One connection instead would serialise the pushes of concurrent jobs and
bound a system's no-op jobs/s by the recorder's round trips.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

EVENTS = "peers:events"
READY = "peers:ready"
RECORDER_CONNECTIONS = 8

_sync: Any = None
_sync_lock = threading.Lock()
_async: dict[int, tuple[Any, Any]] = {}


def _url() -> str:
    return os.environ["PEERS_REDIS_URL"]


def record(kind: str, tag: str) -> None:
    """Synchronous push, for Celery, RQ and Dramatiq tasks (redis-py reconnects after a fork by
    itself; Dramatiq's threads share one pool, made once)."""
    global _sync
    if _sync is None:
        with _sync_lock:
            if _sync is None:
                import redis

                pool = redis.BlockingConnectionPool.from_url(
                    _url(), max_connections=RECORDER_CONNECTIONS)
                opened = [pool.get_connection("RPUSH") for _ in range(RECORDER_CONNECTIONS)]
                for connection in opened:
                    pool.release(connection)
                _sync = redis.Redis(connection_pool=pool)
    _sync.rpush(EVENTS, json.dumps([kind, tag, time.time(), os.getpid()]))


async def arecord(kind: str, tag: str) -> None:
    """Asynchronous push, for ARQ, SAQ and pipeline tasks; one client per event loop, its
    connections opened once (by the first event; concurrent first events wait for it)."""
    import asyncio

    import redis.asyncio as aioredis

    loop_id = id(asyncio.get_running_loop())
    entry = _async.get(loop_id)
    if entry is None:
        pool = aioredis.BlockingConnectionPool.from_url(
            _url(), max_connections=RECORDER_CONNECTIONS)
        entry = _async[loop_id] = (aioredis.Redis(connection_pool=pool),
                                   asyncio.ensure_future(_open_all(pool)))
    client, opening = entry
    await opening
    await client.rpush(EVENTS, json.dumps([kind, tag, time.time(), os.getpid()]))


async def _open_all(pool: Any) -> None:
    opened = [await pool.get_connection("RPUSH") for _ in range(RECORDER_CONNECTIONS)]
    for connection in opened:
        await pool.release(connection)


def mark_ready(name: str) -> None:
    """A worker says it is listening, so the traps start with every worker idle."""
    import redis

    redis.Redis.from_url(_url()).rpush(READY, name)
