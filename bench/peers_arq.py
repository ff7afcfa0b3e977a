"""ARQ side of the peers benchmark: the tasks, `WorkerSettings`, and the driver's adapter.

ARQ as its docs describe: asyncio, `max_jobs` concurrent jobs per worker (default 10; the
driver sets the slot count), the default `poll_delay` (0.5 s), `job_timeout` (the ghost
trap sets it to V; past it ARQ cancels the job), the in-progress key guarding a running job.

Worker: `arq bench.peers_arq.WorkerSettings` with PEERS_* in the environment.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, ClassVar

from arq.connections import RedisSettings

from bench.peers_record import arecord, mark_ready


async def stamp(ctx: dict[str, Any], tag: str) -> None:
    await arecord("start", tag)


async def noop(ctx: dict[str, Any], tag: str) -> None:
    await arecord("done", tag)


async def sleep(ctx: dict[str, Any], tag: str, seconds: float) -> None:
    await arecord("start", tag)
    await asyncio.sleep(seconds)
    await arecord("end", tag)


async def _startup(ctx: dict[str, Any]) -> None:
    mark_ready(f"arq-{os.getpid()}")


class WorkerSettings:
    functions: ClassVar[list[Any]] = [stamp, noop, sleep]
    redis_settings = RedisSettings.from_dsn(os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1"))
    queue_name = os.environ.get("PEERS_QUEUE", "arq:queue")
    max_jobs = int(os.environ.get("PEERS_SLOTS", "10"))
    job_timeout = float(os.environ.get("PEERS_JOB_TIMEOUT_S", "300"))
    on_startup = _startup


class Adapter:
    name = "arq"
    bulk_api = None

    def __init__(self, url: str, queue: str) -> None:
        from arq import create_pool

        self.queue = queue
        self.queue_name = queue
        self.loop = asyncio.new_event_loop()
        self.pool = self.loop.run_until_complete(create_pool(RedisSettings.from_dsn(url)))

    def worker_cmd(self, venv_bin: str, slots: int, name: str) -> list[str]:
        return [f"{venv_bin}/arq", "bench.peers_arq.WorkerSettings"]

    def worker_env(self, slots: int, timeout_s: float | None) -> dict[str, str]:
        env = {"PEERS_SLOTS": str(slots)}
        if timeout_s:
            env["PEERS_JOB_TIMEOUT_S"] = str(timeout_s)
        return env

    def workers_per_slots(self, slots: int) -> int:
        return 1

    def enqueue(self, fn: str, *args: Any, timeout_s: float | None = None) -> None:
        self.loop.run_until_complete(self.pool.enqueue_job(fn, *args, _queue_name=self.queue))

    def enqueue_each(self, fn: str, calls: list[tuple[Any, ...]]) -> None:
        async def one_by_one() -> None:
            for args in calls:
                await self.pool.enqueue_job(fn, *args, _queue_name=self.queue)

        self.loop.run_until_complete(one_by_one())

    def ready_count(self, redis: Any) -> int:
        return int(redis.llen("peers:ready"))

    def close(self) -> None:
        self.loop.run_until_complete(self.pool.aclose())
        self.loop.close()
