"""The CPU pool under a backlog: children recycled at `max_tasks_per_child` while calls wait
must never strand them (Python 3.11's ProcessPoolExecutor alone deadlocks here: CPython
gh-115634; pipeline/queue/pool.py says how it is avoided)."""

from __future__ import annotations

import asyncio

from pipeline.queue.pool import CpuPool


async def test_recycled_children_never_strand_queued_calls() -> None:
    pool = CpuPool(workers=2, max_tasks_per_child=3)
    calls = [pool.run("os.path:basename", f"/docs/{i}") for i in range(30)]
    try:
        # Generous: 30 trivial calls and 10 child starts; before the fix they never ended.
        names = await asyncio.wait_for(asyncio.gather(*calls), 120)
    finally:
        pool.kill()
    assert names == [str(i) for i in range(30)]
