"""A job whose lease expired (its worker stalled or died) and that then completes shows no
error: the lost lease is history (`lease_expiries`, the ledger's attempts), not its final
state. Real Redis, a worker in the test's event loop."""

from __future__ import annotations

from redis.asyncio import Redis

from pipeline.queue import QueueClient, State
from pipeline.redis.keys import Keys
from tests.queue.conftest import InProcessWorker
from tests.support import queue_tasks as qt
from tests.support.waiting import eventually
from tests.support.workers import fast_settings


async def test_a_recovered_job_that_completes_shows_no_error(
    aredis: Redis, keys: Keys, redis_url: str
) -> None:
    client = QueueClient(aredis, keys, fast_settings(keys.prefix))
    async with InProcessWorker(redis_url, client.settings, concurrency=1):
        handle = await client.enqueue(qt.block, "recovered", "done")

        async def started() -> bool:
            return bool(await aredis.get(keys.custom("t", "started", handle.id)))

        await eventually(started, what="the first attempt to start")
        # The lease runs out as if the worker had stalled: the sweeper puts the job back.
        await aredis.zadd(keys.active, {handle.id: 0})

        async def taken_back() -> bool:
            info = await client.get(handle.id)
            return info.attempt == 2 and info.state == State.ACTIVE

        await eventually(taken_back, what="the job reclaimed after its lease expired")
        assert "lease expired" in ((await client.get(handle.id)).error or "")
        await aredis.set(keys.custom("t", "flag", "recovered"), 1)
        assert await handle.result(timeout_s=20) == "done"
    info = await client.get(handle.id)
    assert info.state == State.COMPLETE and info.lease_expiries == 1
    assert info.error is None and info.traceback is None
