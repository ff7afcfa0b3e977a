"""Liveness a blocked event loop cannot fake (issue 14, field case 01 B): leases and heartbeats
renewed from a thread, plain functions run in threads, a blocked loop named in the log, and
fencing kept (a job whose lease really went to someone else is still halted)."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
from redis.asyncio import Redis

from pipeline.queue import QueueClient, State
from pipeline.redis.keys import Keys
from tests.queue import more_tasks
from tests.queue.conftest import InProcessWorker
from tests.support import queue_tasks as qt
from tests.support.waiting import eventually
from tests.support.workers import WorkerProcess, fast_settings

IMPORTS = ("tests.queue.more_tasks",)


@pytest.fixture
async def client(aredis: Redis, keys: Keys) -> QueueClient:
    return QueueClient(aredis, keys, fast_settings(keys.prefix))


async def count(client: QueueClient, what: str, job_id: str) -> int:
    return int(await client.redis.get(client.keys.custom("t", what, job_id)) or 0)


@pytest.mark.slow
async def test_a_task_blocking_the_loop_for_four_leases_finishes_once(
    client: QueueClient, redis_url: str, key_prefix: str
) -> None:
    """Two workers; the job's lease is 2 s and its body blocks the loop for 8 s."""
    workers = [WorkerProcess(redis_url, key_prefix, "--concurrency", "2", imports=IMPORTS)
               for _ in range(2)]  # fmt: skip
    try:
        await eventually(lambda: _live(client, 2), what="both workers registered")
        handle = await client.enqueue(more_tasks.block_loop, 8.0)
        result = await handle.result(timeout_s=90)
        # both workers stayed alive in the registry while one loop was blocked
        assert len(await client.workers()) == 2
    finally:
        for w in workers:
            w.kill()
        logs = "".join(w.output() for w in workers)
        for w in workers:
            w.close()
    info = await handle.info()
    assert info.state == State.COMPLETE and info.lease_ms == 2000
    assert result == f"{info.worker}:1"  # the result of the one and only run is kept
    assert info.attempt == 1 and info.lease_expiries == 0
    assert await count(client, "started", handle.id) == 1
    assert await count(client, "completed", handle.id) == 1
    assert "refused" not in logs and "lease expired" not in logs
    blocked = [line for line in logs.splitlines() if "event loop blocked" in line]
    assert blocked and "task t.block_loop" in blocked[0] and "more_tasks.py" in blocked[0]
    assert "event loop unblocked" in logs


async def _live(client: QueueClient, n: int) -> bool:
    return len(await client.workers()) >= n


async def test_plain_functions_run_in_threads_off_the_loop(
    client: QueueClient, redis_url: str
) -> None:
    async with InProcessWorker(redis_url, client.settings, concurrency=2) as w:
        handles = [await client.enqueue(more_tasks.plain_sleep, 1.5) for _ in range(2)]
        results = [await h.result(timeout_s=30) for h in handles]
    for handle, result in zip(handles, results, strict=True):
        assert result["job"] == handle.id and result["thread"].startswith("task")
        info = await handle.info()
        assert info.attempt == 1 and info.lease_expiries == 0 and info.lease_ms == 1000
    assert w.liveness.blocked_warnings == 0  # the loop stayed free while both slept


async def test_a_value_a_thread_returned_is_kept_when_a_halt_lands_before_the_job_wakes(
    client: QueueClient, redis_url: str
) -> None:
    """A plain function returns within its timeout while the loop is busy, and the timeout
    falls due before the loop runs again: the timer's halt then runs after the thread's result
    reached the job's future but before the job's task wakes up to read it. The value stands:
    the job completes on its one attempt, not retried as timed out (its paid work run twice)."""
    async with InProcessWorker(redis_url, client.settings, concurrency=1) as w:
        handle = await client.enqueue(more_tasks.plain_waits, redis_url)
        await eventually(lambda: count(client, "started", handle.id), what="the thread running")
        due = time.monotonic() + 2.0  # timeout_s; its timer was set before the thread started
        # From here on this test blocks the loop it shares with the worker: no await until
        # the thread has returned and the timeout is due.
        flag = redis.Redis.from_url(redis_url)
        flag.set(client.keys.custom("t", "flag", handle.id), 1)
        flag.close()
        assert w._threads is not None  # one thread: the probe runs once the job's has returned
        w._threads.submit(lambda: None).result(timeout=30)
        time.sleep(due + 0.2 - time.monotonic())  # noqa: ASYNC251 -- the busy loop, on purpose
        result = await handle.result(timeout_s=30)
    info = await handle.info()
    assert result == "returned by attempt 1"
    assert info.attempt == 1 and await count(client, "started", handle.id) == 1
    assert w.counters.completed == 1 and w.counters.retried == 0


async def test_a_job_whose_lease_was_taken_over_is_still_halted(
    client: QueueClient, redis_url: str
) -> None:
    async with InProcessWorker(redis_url, client.settings, concurrency=1) as w:
        handle = await client.enqueue(qt.block, "never-needed")
        await eventually(lambda: count(client, "started", handle.id), what="start")
        # another claim took the job: its token changed under this worker
        await client.redis.hset(client.keys.job(handle.id), "token", "999-other")
        # the body waits for a flag nobody sets: only a halt ends it
        await eventually(lambda: asyncio.sleep(0, not w.running), what="the run halted")
    assert await count(client, "completed", handle.id) == 0
    assert w.counters.completed == 0 and w.counters.fenced == 0  # stopped before settling
    raw = await client.redis.hgetall(client.keys.job(handle.id))
    assert raw["token"] == "999-other" and raw["state"] == "active"  # the owner's, untouched
