"""pipeline side of the peers benchmark: the same three task bodies, and the driver's adapter.

Defaults throughout: a job stays in Redis until a worker slot can start it now, and its
lease is 2 x `expected_duration_s`, renewed while it runs. In the ghost trap the sleep task
declares `expected_duration_s = V / 2`, so its first lease equals the peers' timeout V.

Worker: `python -m pipeline worker --import bench.peers_pipeline --concurrency N`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from bench.peers_record import arecord
from pipeline.queue import JobContext, task

_GHOST_EXPECTED_S = float(os.environ.get("PEERS_EXPECTED_S", "10"))


@task(name="peers.stamp", expected_duration_s=0.01, max_attempts=1)
async def stamp(ctx: JobContext, tag: str) -> None:
    await arecord("start", tag)


@task(name="peers.noop", expected_duration_s=0.01, max_attempts=1)
async def noop(ctx: JobContext, tag: str) -> None:
    await arecord("done", tag)


@task(name="peers.sleep", expected_duration_s=_GHOST_EXPECTED_S, timeout_s=3600, max_attempts=3)
async def sleep(ctx: JobContext, tag: str, seconds: float) -> None:
    await arecord("start", tag)
    await asyncio.sleep(seconds)
    await arecord("end", tag)


class Adapter:
    name = "pipeline"
    bulk_api = "QueueClient.enqueue_many"

    def __init__(self, url: str, queue: str) -> None:
        from pipeline.queue import QueueClient
        from pipeline.redis.connection import connect_redis
        from pipeline.redis.keys import Keys
        from pipeline.settings import load_settings

        self.prefix = queue
        self.queue_name = queue
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.client = QueueClient(connect_redis(url), Keys(queue), load_settings(key_prefix=queue))
        self.tasks = {"stamp": stamp, "noop": noop, "sleep": sleep}

    def worker_cmd(self, venv_bin: str, slots: int, name: str) -> list[str]:
        return [sys.executable, "-m", "pipeline", "worker", "--import", "bench.peers_pipeline",
                "--concurrency", str(slots), "--log-level", "WARNING"]

    def worker_env(self, slots: int, timeout_s: float | None) -> dict[str, str]:
        env = {"PIPELINE_KEY_PREFIX": self.prefix, "PIPELINE_REDIS_URL": self.url,
               "PIPELINE_HOME": os.environ.get("PEERS_HOME", ".pipeline/bench-peers")}
        if timeout_s:
            env["PEERS_EXPECTED_S"] = str(timeout_s / 2)
        return env

    def workers_per_slots(self, slots: int) -> int:
        return 1

    def enqueue(self, fn: str, *args: Any, timeout_s: float | None = None) -> None:
        self.loop.run_until_complete(self.client.enqueue(self.tasks[fn], *args))

    def enqueue_each(self, fn: str, calls: list[tuple[Any, ...]]) -> None:
        async def one_by_one() -> None:
            for args in calls:
                await self.client.enqueue(self.tasks[fn], *args)

        self.loop.run_until_complete(one_by_one())

    def enqueue_many(self, fn: str, calls: list[tuple[Any, ...]]) -> None:
        task = self.tasks[fn]
        self.loop.run_until_complete(self.client.enqueue_many([task.call(*a) for a in calls]))

    def ready_count(self, redis: Any) -> int:
        return len(self.loop.run_until_complete(self.client.workers()))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()
