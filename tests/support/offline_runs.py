"""Running documents through the real analysis tasks for the offline-analysis tests.

Real Redis, a real SQLite ledger, a real worker with its process pool, the real tasks in
tasks/analyze.py; the provider is the offline analyzer, or the real google-genai client
against the project's emulator.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import redis

from pipeline.llm.provider import LLMRequest, LLMResponse, Provider
from pipeline.queue import QueueClient
from pipeline.queue.job import State
from pipeline.redis.connection import connect_redis
from pipeline.settings import load_settings
from tasks.submission import Upload, submit_uploads
from tests.support.waiting import eventually


class Recording:
    """A provider that keeps every request it passes on (to read what a call was sent)."""

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        self.name = getattr(inner, "name", "gemini")
        self.requests: list[LLMRequest] = []

    async def generate(self, request: LLMRequest) -> LLMResponse:
        self.requests.append(request)
        return await self.inner.generate(request)

    async def count_tokens(self, request: LLMRequest) -> int:
        return await self.inner.count_tokens(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def analyse(
    redis_url: str, prefix: str, home: Path, uploads: list[Upload], provider: Provider,
    timeout_s: float = 120, **settings: Any,
) -> dict[str, Any]:  # fmt: skip
    """Submit `uploads`, run a worker until every document's last job ends, and return
    {name: that job's result (the stored record)}; fails on any job that did not complete."""
    import tasks.analyze  # noqa: F401  (registers the tasks)
    from pipeline.services import build_worker, open_services

    config = load_settings(
        key_prefix=prefix, home=home, database_url=f"sqlite:///{home / 'ledger.db'}",
        cpu_workers=2, **settings,
    )  # fmt: skip
    client = QueueClient(connect_redis(redis_url), settings=config)
    services = await open_services(client, provider=provider)
    worker = await build_worker(client, queues=["default"], concurrency=8, services=services)
    run = asyncio.create_task(worker.run(install_signals=False))
    try:
        sub = await submit_uploads(client, uploads, services=services)
        results: dict[str, Any] = {}
        for upload, job_id in zip(uploads, sub.job_ids, strict=True):

            async def last_job(job_id: str = job_id) -> Any:
                job = await client.get(job_id)
                if job.state == State.COMPLETE and isinstance(job.result, dict):
                    if "callback_job" in job.result:
                        job = await client.get(str(job.result["callback_job"]))
                return job if job.done else None

            job = await eventually(last_job, timeout_s, f"{upload.name} to finish")
            assert job.state == State.COMPLETE, f"{upload.name}: {job.state} {job.error}"
            results[upload.name] = job.result
        await services.recorder.flush()
        return results
    finally:
        worker.stop()
        await asyncio.wait_for(run, 60)
        await services.aclose()
        await client.aclose()


def run_offline(redis_url: str, home: Path, uploads: list[Upload], **settings: Any) -> Any:
    """`analyse` with the offline analyzer, under a fresh key prefix removed afterwards."""
    from pipeline.llm.offline import OfflineProvider

    prefix = f"test-{uuid.uuid4().hex[:12]}"
    try:
        return asyncio.run(
            analyse(redis_url, prefix, home, uploads, OfflineProvider(), **settings)
        )
    finally:
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match="{" + prefix + "}*", count=1000):
            client.delete(key)
        client.close()
