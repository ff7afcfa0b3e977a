"""Claims that read the next heads with them (pipeline/queue/heads.py), on a real Redis:
workers racing on stale heads refuse each other's jobs, never run one twice."""

from __future__ import annotations

import contextlib

from pipeline.queue import QueueClient
from tests.queue.conftest import worker
from tests.support import queue_tasks as qt
from tests.support.workers import fast_settings


async def test_racing_workers_run_every_job_exactly_once(
    client: QueueClient, redis_url: str
) -> None:
    # Leases long enough that none can expire, whatever the machine's load: what is raced
    # here is the claim. (With the test timings' 1 s lease, a worker starved of CPU for a
    # second beside two burners lost two leases, the sweeper gave the jobs to another
    # worker, and they ran twice, each second completion fenced: leases do that by design,
    # tests/queue/test_jobs.py covers it.)
    client = QueueClient(client.redis, client.keys, fast_settings(client.keys.prefix,
                                                                  min_lease_s=60))  # fmt: skip
    jobs = 400
    handles = await client.enqueue_many([qt.record.call(str(i)) for i in range(jobs)])
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(3):
            await stack.enter_async_context(worker(redis_url, client, concurrency=8))
        for handle in handles:
            await handle.result(timeout_s=120)
    ran = await client.redis.lrange(qt.tkey(client, "order"), 0, -1)
    assert sorted(ran, key=int) == [str(i) for i in range(jobs)]
    depths = await client.depths()
    assert depths["active"] == 0 and depths["queues"]["default"]["ready"] == 0
