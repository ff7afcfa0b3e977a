"""`pipeline worker --burst` does not exit while a job of its queues is, or is about to be,
requeued from a lease that expired: it sweeps before it calls its queues empty. Real worker
processes against a real Redis; the first is killed mid-job, so only its lease is left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from redis.asyncio import Redis

from pipeline.queue import JobOptions, QueueClient
from pipeline.redis.keys import Keys
from tests.support.waiting import eventually
from tests.support.workers import fast_settings, worker_env

MODULE = '''
import asyncio, os
from pipeline.queue import task


@task(name="burst.sleepy", expected_duration_s=float(os.environ.get("DUR", "1")), max_attempts=3)
async def sleepy(ctx):
    if os.environ.get("HANG"):
        await asyncio.sleep(3600)
    return "done"
'''


def _worker(folder: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-P", "-m", "pipeline", "worker", "--import", "burstmod", *args],
        cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


async def _hung_job(folder: Path, env: dict[str, str], client: QueueClient) -> str:
    """A job left active by a worker killed while running it: only its lease remains."""
    hung = _worker(folder, {**env, "HANG": "1"})
    try:
        handle = await client.enqueue("burst.sleepy", _options=JobOptions(queue="default"))

        async def running() -> bool:
            return (await client.get(handle.id)).state.value == "active"

        await eventually(running, 60, what="the job to run")
    finally:
        os.kill(hung.pid, signal.SIGKILL)
        hung.communicate(timeout=10)
    return handle.id


async def _lease_left_ms(aredis: Redis, keys: Keys, job_id: str) -> float:
    score = await aredis.zscore(keys.active, job_id)
    assert score is not None
    return score - (await aredis.time())[0] * 1000


async def _burst_runs_it(folder: Path, env: dict[str, str], client: QueueClient,
                         job_id: str) -> None:  # fmt: skip
    burst = _worker(folder, env, "--burst")
    _, err = burst.communicate(timeout=60)
    assert burst.returncode == 0, err
    job = await client.get(job_id)
    assert job.state.value == "complete", (job.state, err)
    assert job.result == "done"


async def test_a_burst_worker_runs_a_job_whose_lease_expired_before_it_exits(
    tmp_path: Path, aredis: Redis, keys: Keys, redis_url: str
) -> None:
    (tmp_path / "burstmod.py").write_text(MODULE)
    env = worker_env(redis_url, keys.prefix)
    client = QueueClient(aredis, keys, fast_settings(keys.prefix))
    job_id = await _hung_job(tmp_path, env, client)

    async def expired() -> bool:  # the killed worker's lease has run out, nobody swept it
        return await _lease_left_ms(aredis, keys, job_id) < 0

    await eventually(expired, 30, what="its lease to run out")
    await _burst_runs_it(tmp_path, env, client, job_id)


async def test_a_burst_worker_waits_for_the_lease_of_a_worker_that_is_gone(
    tmp_path: Path, aredis: Redis, keys: Keys, redis_url: str
) -> None:
    (tmp_path / "burstmod.py").write_text(MODULE)
    env = worker_env(redis_url, keys.prefix, DUR="3")  # a 6 s lease
    client = QueueClient(aredis, keys, fast_settings(keys.prefix))
    job_id = await _hung_job(tmp_path, env, client)

    async def gone() -> bool:  # its heartbeat lapsed: no live worker holds the job
        return not await client.workers()

    await eventually(gone, 30, what="the worker to leave")
    assert await _lease_left_ms(aredis, keys, job_id) > 0  # not requeued yet: about to be
    await _burst_runs_it(tmp_path, env, client, job_id)
