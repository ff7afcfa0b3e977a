"""SAQ side of the peers benchmark: the tasks, the worker `settings`, and the driver's adapter.

SAQ as its docs describe: asyncio, `concurrency` jobs per worker (default 10; the driver
sets the slot count), jobs claimed with a blocking move into an active list, a heartbeat per
job and a periodic sweep; `timeout` per job (the ghost trap sets it to V; past it SAQ
aborts the job). SAQ takes keyword arguments only, and has no bulk enqueue (its `map`
waits for the results), so its bulk figure is left out.

Worker: `saq bench.peers_saq.settings` with PEERS_* in the environment.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from saq import Queue

from bench.peers_record import arecord, mark_ready


async def stamp(ctx: dict[str, Any], *, tag: str) -> None:
    await arecord("start", tag)


async def noop(ctx: dict[str, Any], *, tag: str) -> None:
    await arecord("done", tag)


async def sleep(ctx: dict[str, Any], *, tag: str, seconds: float) -> None:
    await arecord("start", tag)
    await asyncio.sleep(seconds)
    await arecord("end", tag)


async def _startup(ctx: dict[str, Any]) -> None:
    mark_ready(f"saq-{os.getpid()}")


def _settings() -> dict[str, Any]:
    url = os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1")
    return {
        "queue": Queue.from_url(url, name=os.environ.get("PEERS_QUEUE", "peers")),
        "functions": [stamp, noop, sleep],
        "concurrency": int(os.environ.get("PEERS_SLOTS", "10")),
        "startup": _startup,
    }


settings = _settings() if "PEERS_QUEUE" in os.environ else {}

_ARGS = {"stamp": ("tag",), "noop": ("tag",), "sleep": ("tag", "seconds")}


class Adapter:
    name = "saq"
    bulk_api = None

    def __init__(self, url: str, queue: str) -> None:
        self.queue_name = queue
        self.loop = asyncio.new_event_loop()
        self.queue = Queue.from_url(url, name=queue)
        self.loop.run_until_complete(self.queue.connect())

    def worker_cmd(self, venv_bin: str, slots: int, name: str) -> list[str]:
        return [f"{venv_bin}/saq", "bench.peers_saq.settings", "--quiet"]

    def worker_env(self, slots: int, timeout_s: float | None) -> dict[str, str]:
        return {"PEERS_SLOTS": str(slots)}

    def workers_per_slots(self, slots: int) -> int:
        return 1

    async def _enqueue(self, fn: str, args: tuple[Any, ...], timeout_s: float | None) -> None:
        kwargs = dict(zip(_ARGS[fn], args, strict=True))
        await self.queue.enqueue(fn, timeout=int(timeout_s or 600), **kwargs)

    def enqueue(self, fn: str, *args: Any, timeout_s: float | None = None) -> None:
        self.loop.run_until_complete(self._enqueue(fn, args, timeout_s))

    def enqueue_each(self, fn: str, calls: list[tuple[Any, ...]]) -> None:
        async def one_by_one() -> None:
            for args in calls:
                await self._enqueue(fn, args, None)

        self.loop.run_until_complete(one_by_one())

    def ready_count(self, redis: Any) -> int:
        return int(redis.llen("peers:ready"))

    def close(self) -> None:
        self.loop.run_until_complete(self.queue.disconnect())
        self.loop.close()
