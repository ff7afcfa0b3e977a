"""What a waiting job holds in its worker (issue 16: memory per waiting slow job), read with
tracemalloc: a bound well above what it is and well below what it was."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

from pipeline.queue import QueueClient
from tests.queue.conftest import worker
from tests.support import queue_tasks as qt
from tests.support.queue_tasks import count, set_flag
from tests.support.waiting import eventually

JOBS = 40
# Per sleeping job, on asyncio's loop, with the task's own coroutine, asyncio.sleep and its
# timer: 1.7-2.1 KB since a job's record and entry were made lean (job.py, job_values.py, the
# entry as the task's context; 1.8-2.5 KB beside two CPU burners, 2.0-2.3 KB in suite runs of
# 4 processes on 2 cores); 2.1-2.4 KB before that (1.8-2.5 KB when written, 3.2 KB once in a
# suite run of 6 processes); 3.7-4.1 KB before the worker's first cuts (this test at 78015d7).
BOUND_B = 3000


async def test_a_sleeping_job_holds_under_the_bound_in_its_worker(
    client: QueueClient, redis_url: str
) -> None:
    tracemalloc.start()
    try:
        async with worker(redis_url, client, concurrency=JOBS) as w:
            # a first round: pools, buffers and dicts grow to their size before the reading
            first = [(await client.enqueue(qt.nap, 0.05)).id for _ in range(JOBS)]
            for job_id in first:
                await client.wait(job_id, timeout_s=30)

            async def idle() -> bool:
                return not w.running

            await eventually(idle, what="the first round settled")
            await asyncio.sleep(0.3)
            gc.collect()
            before = tracemalloc.take_snapshot()
            ids = [(await client.enqueue(qt.nap, 120)).id for _ in range(JOBS)]

            async def running() -> bool:
                return len(w.running) == JOBS

            await eventually(running, what="every job running")
            await asyncio.sleep(0.3)  # each body reaches its sleep (one not there weighs less)
            gc.collect()
            during = tracemalloc.take_snapshot()
            for job_id in ids:
                await client.cancel(job_id)
    finally:
        tracemalloc.stop()
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    diff = during.filter_traces(ignore).compare_to(before.filter_traces(ignore), "filename")
    per_job = sum(stat.size_diff for stat in diff) / JOBS
    assert per_job < BOUND_B, f"{per_job:.0f} B a waiting job"


async def test_a_settled_chord_callback_leaves_its_group_results_behind(
    client: QueueClient, redis_url: str
) -> None:
    """What a settled job held must not stay with it: an ended entry once stayed in the
    timeout heap (timeouts.py) until it reached the top. Here a job started first holds the
    top, and a callback's group results (4 x 500 KB) must be freed once it has settled."""
    async with worker(redis_url, client, concurrency=3) as w:
        holder = await client.enqueue(qt.block, "results-freed", "done")  # the heap's top
        await eventually(lambda: count(client, "started", holder.id), what="start")

        async def only_the_holder() -> bool:
            return len(w.running) == 1

        async def chord(n: int) -> list[int]:
            group = await client.group([qt.sized.call(n) for _ in range(4)],
                                       then=qt.lengths.call())  # fmt: skip
            out: list[int] = await group.callback.result(timeout_s=20)
            await eventually(only_the_holder, what="the chord settled")
            return out

        await chord(10)  # a first round: pools, buffers and dicts grow to their size
        gc.collect()
        tracemalloc.start()
        try:
            assert await chord(500_000) == [500_000] * 4
            gc.collect()
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        await set_flag(client, "results-freed")
        assert await holder.result(timeout_s=20) == "done"
    assert held < 500_000, f"{held} B still held after the chord settled"
