"""What every benchmarked job does besides sleeping: push one JSON event to Redis.

The four systems run the same task bodies, so the driver measures them all the same way:
a job's start and end land in the list `peers:events` of the database the run owns, as
`[kind, tag, unix_time_s, pid]`. A tag seen starting twice is a duplicate execution. This
module imports only redis-py and the standard library so it loads in both virtualenvs.

The recorder's connections must not move the memory figures: a pool that grows on demand
opens a connection per concurrent push, so 40 jobs starting together grew it to 20-37
connections of 22-24 KB each after the idle reading, and "memory per waiting slow job"
measured the recorder (how many connections depended on how closely a system's jobs start
together) rather than the system. So each event loop's pool opens ASYNC_CONNECTIONS on its
first event, more than any run has jobs at once (40 slow jobs, 32 slots), and never grows
after the idle reading; a capped pool instead (jobs waiting for one of a few connections)
cost a 32-slot worker 15-25 % of its no-op jobs/s. The synchronous recorder (Celery, RQ,
Dramatiq: one thread per slot, at most 8 in the rate figures) opens SYNC_CONNECTIONS once in
a process with threads (one in a single-threaded one) and lets more threads wait for one.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

EVENTS = "peers:events"
READY = "peers:ready"
SYNC_CONNECTIONS = 8
ASYNC_CONNECTIONS = 48

_sync: Any = None
_sync_lock = threading.Lock()
_async: dict[int, tuple[Any, Any]] = {}


def _url() -> str:
    return os.environ["PEERS_REDIS_URL"]


def record(kind: str, tag: str) -> None:
    """Synchronous push, for Celery, RQ and Dramatiq tasks (redis-py reconnects after a fork by
    itself; Dramatiq's threads share one pool, made once)."""
    global _sync
    now = time.time()  # the job's start: before the recorder opens its connections
    if _sync is None:
        with _sync_lock:
            if _sync is None:
                import redis

                pool = redis.BlockingConnectionPool.from_url(
                    _url(), max_connections=SYNC_CONNECTIONS)
                # one in a single-threaded process (a Celery child, an RQ work horse forked
                # per job: opening more would cost every job), all of them beside threads
                count = SYNC_CONNECTIONS if threading.active_count() > 1 else 1
                opened = [pool.get_connection("RPUSH") for _ in range(count)]
                for connection in opened:
                    pool.release(connection)
                _sync = redis.Redis(connection_pool=pool)
    _sync.rpush(EVENTS, json.dumps([kind, tag, now, os.getpid()]))


async def arecord(kind: str, tag: str) -> None:
    """Asynchronous push, for ARQ, SAQ and pipeline tasks; one client per event loop, its
    connections opened once (by the first event; concurrent first events wait for it)."""
    import asyncio

    import redis.asyncio as aioredis

    now = time.time()  # the job's start: before the recorder opens its connections
    loop_id = id(asyncio.get_running_loop())
    entry = _async.get(loop_id)
    if entry is None:
        pool = aioredis.ConnectionPool.from_url(_url())
        entry = _async[loop_id] = (aioredis.Redis(connection_pool=pool),
                                   asyncio.ensure_future(_open_all(pool)))
    client, opening = entry
    await opening
    await client.rpush(EVENTS, json.dumps([kind, tag, now, os.getpid()]))


async def _open_all(pool: Any) -> None:
    opened = [await pool.get_connection("RPUSH") for _ in range(ASYNC_CONNECTIONS)]
    for connection in opened:
        await pool.release(connection)


def mark_ready(name: str) -> None:
    """A worker says it is listening, so the traps start with every worker idle."""
    import redis

    redis.Redis.from_url(_url()).rpush(READY, name)
