"""What `pipeline cancel` and a worker's last line say agree with what happened: a running job
asked to cancel is said to stop within about a second (and does, as the job's state shows),
and the worker counts it as cancelled, and a postponed attempt as postponed, not as failed or
retried. Real worker processes and the real CLI against a real Redis."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from pathlib import Path

from redis.asyncio import Redis

from pipeline.queue import JobOptions, QueueClient
from pipeline.redis.keys import Keys
from tests.support.cli import run_cli
from tests.support.waiting import eventually
from tests.support.workers import fast_settings, worker_env

MODULE = '''
import asyncio
from pipeline.errors import Retry
from pipeline.queue import task


@task(name="words.hang", expected_duration_s=1.0)
async def hang(ctx):
    await asyncio.sleep(3600)


@task(name="words.later", expected_duration_s=1.0)
async def later(ctx):
    if ctx.job.attempt <= 1 and not ctx.job.progress:
        await ctx.progress({"postponed": True})
        raise Retry("waiting for a window", delay_s=0.1, count_attempt=False)
    return "done"
'''


async def test_cancel_and_the_worker_counters_say_what_happened(
    tmp_path: Path, aredis: Redis, keys: Keys, redis_url: str
) -> None:
    (tmp_path / "wordsmod.py").write_text(MODULE)
    env = worker_env(redis_url, keys.prefix, PIPELINE_HOME=str(tmp_path / "home"),
                     PIPELINE_DATABASE_URL=f"sqlite:///{tmp_path / 'ledger.db'}")  # fmt: skip
    client = QueueClient(aredis, keys, fast_settings(keys.prefix))
    worker = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-P", "-m", "pipeline", "worker", "--import", "wordsmod"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        hung = await client.enqueue("words.hang", _options=JobOptions(queue="default"))
        later = await client.enqueue("words.later", _options=JobOptions(queue="default"))

        async def running() -> bool:
            return (await client.get(hung.id)).state.value == "active"

        await eventually(running, 60, what="the hanging job to run")
        said = await asyncio.to_thread(run_cli, env, "cancel", hung.id, cwd=tmp_path)

        async def cancelled() -> bool:
            return (await client.get(hung.id)).state.value == "cancelled"

        # "within about 1 second", with room for a busy machine
        await eventually(cancelled, 20, what="the cancelled job to end cancelled")
        assert await later.result(timeout_s=30) == "done"
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    assert said.returncode == 0, said.stderr
    assert "cancellation requested for 1 running job" in said.stdout, said.stdout
    assert "within about 1 second" in said.stdout
    assert "0 jobs cancelled" not in said.stdout and "lease renewal" not in said.stdout
    stopped = next(line for line in err.splitlines() if " stopped: " in line)
    assert "Counters(" not in stopped
    assert re.search(r"\bcancelled 1\b", stopped) and re.search(r"\bpostponed 1\b", stopped)
    assert "failed" not in stopped and "retried" not in stopped, stopped
