"""Sentinel failover with a batch running (issue 14): real redis-server and sentinel
processes, real `pipeline worker` processes. The master is SIGKILLed mid-batch; the sentinels
promote the replica, workers and client reconnect through the sentinels, every job completes,
and no job body runs to completion twice (counted in a file, outside Redis)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

import pytest

from pipeline.queue import QueueClient
from tests.scenarios import ha_tasks
from tests.scenarios.redis_ha import SentinelSet, sentinel_set
from tests.support.waiting import eventually
from tests.support.workers import WorkerProcess, fast_settings

pytestmark = pytest.mark.slow

JOBS = 60
IMPORTS = ("tests.scenarios.ha_tasks",)


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def test_master_killed_mid_batch_every_job_completes_once(
    tmp_path: Path, key_prefix: str
) -> None:
    done_log = tmp_path / "completions.log"
    with sentinel_set(tmp_path / "redis") as ha:
        client = await QueueClient.connect(fast_settings(key_prefix, redis_url=ha.url),
                                           long_lived=True)  # fmt: skip
        workers = [WorkerProcess(ha.url, key_prefix, "--concurrency", "4", imports=IMPORTS)
                   for _ in range(2)]  # fmt: skip
        try:
            await eventually(lambda: _live(client, 2), timeout_s=30, what="two workers")
            handles = [await client.enqueue(ha_tasks.step, i, str(done_log)) for i in range(JOBS)]
            assert client.replicas.unacked == 0  # the replica acknowledged every enqueue
            await eventually(lambda: _completions(done_log, 10), what="ten jobs done")
            ha.master.kill()
            killed = time.monotonic()
            await eventually(lambda: _promoted(ha), timeout_s=30, what="the replica promoted")
            promoted_s = time.monotonic() - killed
            results = [await h.result(timeout_s=60) for h in handles]
            all_done_s = time.monotonic() - killed
            alive = [w.proc.poll() is None for w in workers]
            attempts = [(await h.info()).attempt for h in handles]
            twice = [j for j, n in Counter(lines(done_log)[0::3]).items() if n > 1]
            events = cast(list[Any], await client.redis.xrange(client.keys.events))
            history = {j: [e[1]["state"] for e in events if e[1].get("job") == j] for j in twice}
        finally:
            for w in workers:
                w.kill()
            logs = "".join(w.output() for w in workers)
            for w in workers:
                w.close()
            await client.aclose()
    assert results == list(range(JOBS)), logs[-3000:]
    runs = Counter(lines(done_log)[0::3])  # job id of each completed body
    assert len(runs) == JOBS and set(runs.values()) == {1}, (history, logs[-3000:])
    # not even a partial second run: every claim and settlement survived the failover
    assert set(attempts) == {1}, logs[-3000:]
    assert alive == [True, True]  # the same worker processes reconnected and carried on
    print(f"\nsentinel failover: replica promoted {promoted_s:.1f}s after the master was "
          f"killed; all {JOBS} jobs complete {all_done_s:.1f}s after; each ran once")  # fmt: skip


async def _live(client: QueueClient, n: int) -> bool:
    return len(await client.workers()) >= n


async def _completions(path: Path, n: int) -> bool:
    return len(lines(path)) >= 3 * n


async def _promoted(ha: SentinelSet) -> bool:
    return ha.master_port() == ha.replica.port
