"""The worker itself: its registry entry, its process pool (fresh children, a crashed child
replaced), an admission gate that refuses one model, and burst mode."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pipeline.queue import Admission, Candidate, JobOptions, QueueClient, State
from tests.queue.conftest import InProcessWorker, worker
from tests.support import queue_tasks as qt
from tests.support.waiting import eventually


async def test_worker_registry_and_process_pool(client: QueueClient, redis_url: str) -> None:
    from pipeline.queue.pool import CpuPool

    pool = CpuPool(workers=1, max_tasks_per_child=1)
    async with worker(redis_url, client, concurrency=3, worker_id="reg-1", pool=pool):
        live = await eventually(client.workers, what="heartbeat")
        assert live[0]["id"] == "reg-1" and live[0]["concurrency"] == 3
        out = await (await client.enqueue(qt.cpu, 7)).result(timeout_s=60)
    assert [o["square"] for o in out] == [49, 49, 49]
    assert len({o["pid"] for o in out}) == 3  # a fresh child per call: memory handed back
    assert await client.workers() == []  # left the registry on stop


async def test_a_crashed_pool_process_is_replaced(
    client: QueueClient, redis_url: str, tmp_path: Path
) -> None:
    """A PDF parser killed mid-call (OOM) costs one attempt, not the worker's pool for good."""
    from pipeline.queue.pool import CpuPool

    pool = CpuPool(workers=1, max_tasks_per_child=10)
    async with worker(redis_url, client, concurrency=1, pool=pool):
        handle = await client.enqueue(qt.cpu_crash, str(tmp_path / "died-once"))
        assert await handle.result(timeout_s=60) == "survived"
    info = await handle.info()
    # The dead process cost one attempt; once complete, the job shows no error (issue 12).
    assert info.attempt == 2 and info.error is None


class _PausedModelGate:
    """Refuses jobs of one model (as a paused or daily-exhausted bucket would)."""

    def __init__(self, paused: str) -> None:
        self.paused = paused

    async def admit(self, candidate: Candidate) -> Admission:
        if candidate.hints.get("model") == self.paused:
            return Admission(ok=False, retry_after_s=0.2, reason="paused")
        return Admission(ok=True)

    async def release(self, admission: Admission) -> None:
        return None


async def test_a_refused_model_does_not_hold_up_the_queue(
        client: QueueClient, redis_url: str) -> None:
    stuck = await client.enqueue(qt.echo, "later",
                                 _options=JobOptions(hints={"model": "paused-model"}))
    others = [await client.enqueue(qt.echo, i, _options=JobOptions(hints={"model": m}))
              for i, m in enumerate(["paused-model", "open-model", None, "open-model"])]
    async with worker(redis_url, client, concurrency=1, gate=_PausedModelGate("paused-model")):
        for h in (others[1], others[2], others[3]):
            assert await h.result(timeout_s=20) is not None
        assert (await stuck.info()).state == State.QUEUED
        assert (await others[0].info()).state == State.QUEUED


async def test_burst_worker_exits_when_queues_empty(client: QueueClient, redis_url: str) -> None:
    for i in range(5):
        await client.enqueue(qt.echo, i)
    w = InProcessWorker(redis_url, client.settings, concurrency=2, burst=True)
    await w.__aenter__()
    assert w.task is not None
    await asyncio.wait_for(w.task, 30)
    assert w.worker.counters.completed == 5
    await w.client.aclose()


async def test_a_job_being_settled_holds_no_slot(client: QueueClient, redis_url: str) -> None:
    """With one slot, the next job starts while the last one's end hooks still run: its body
    is over, so its slot is free, and the claim goes out beside the settlement."""
    release = asyncio.Event()
    ended: list[str] = []

    async def slow_end_hook(ctx: Any, outcome: str, error: str | None) -> None:
        ended.append(ctx.job.id)
        if len(ended) == 1:
            await release.wait()

    first = await client.enqueue(qt.echo, 1)
    second = await client.enqueue(qt.echo, 2)
    async with worker(redis_url, client, concurrency=1, on_job_end=[slow_end_hook]) as w:
        assert await second.result(timeout_s=20) == 2  # while the first's hook still waits
        assert ended[0] == first.id and not release.is_set()
        assert w._busy() == 0
        release.set()
        assert await first.result(timeout_s=20) == 1
    assert w.counters.completed == 2 and w.running == {}
