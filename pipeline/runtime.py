"""Assembling a worker process: the queue worker plus what tasks need (process pool, LLM
provider, limiter gate, ledger hooks) from settings.

Kept apart from the queue core so the queue knows nothing of LLMs or SQL; the pieces are
added here as each layer exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.queue.client import QueueClient
from pipeline.queue.pool import CpuPool
from pipeline.queue.worker import Worker


async def build_worker(
    client: QueueClient, *, queues: Sequence[str], concurrency: int | None, burst: bool = False
) -> Worker:
    s = client.settings
    pool = CpuPool(s.cpu_workers, s.cpu_max_tasks_per_child)
    deps: dict[str, Any] = {}
    return Worker(client, queues=queues, concurrency=concurrency, burst=burst, pool=pool, deps=deps)
