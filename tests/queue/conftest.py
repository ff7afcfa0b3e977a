"""What the queue tests share: a Worker running in the test's event loop.

The tasks they enqueue, and the Redis state those tasks share with the test (`tkey`, `count`,
`set_flag`), are in tests/support/queue_tasks.py: worker subprocesses import them too.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pipeline.queue import QueueClient, Worker
from pipeline.redis.connection import connect_redis
from pipeline.settings import Settings


class InProcessWorker:
    """A Worker running as a task in the test's event loop, on its own Redis connection."""

    def __init__(self, redis_url: str, settings: Settings, **kwargs: Any) -> None:
        self.client = QueueClient(connect_redis(redis_url), settings=settings)
        self.worker = Worker(self.client, **kwargs)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Worker:
        self.task = asyncio.create_task(self.worker.run(install_signals=False))
        return self.worker

    async def __aexit__(self, *exc: object) -> None:
        self.worker.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 30)
        await self.client.aclose()


def worker(redis_url: str, client: QueueClient, **kw: Any) -> InProcessWorker:
    """An in-process Worker (Worker keyword arguments) with `client`'s settings."""
    return InProcessWorker(redis_url, client.settings, **kw)
