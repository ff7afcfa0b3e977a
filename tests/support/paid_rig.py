"""A whole pipeline in the test process — queue, worker, services, SQLite ledger, the real
google-genai client — against the Gemini emulator, for scenarios about what paid calls
cost and how documents end.

    async with running_pipeline(emu, redis_url, key_prefix) as rig:
        sub = await rig.submit(Upload("a.pdf", pdf), budget=Decimal("0.05"))
        job = await rig.finished(sub.job_ids[0])
        rows = rig.calls()
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx

from pipeline.ledger.db import create_ledger_engine, session_factory
from pipeline.ledger.models import LLMCall
from pipeline.ledger.report import cost_report
from pipeline.llm.attempts import UNUSED
from pipeline.llm.gemini import GeminiProvider
from pipeline.queue import QueueClient
from pipeline.queue.job import Job, State
from pipeline.redis.connection import connect_redis
from pipeline.services import Services
from pipeline.settings import load_settings
from tasks.submission import Submission, Upload, submit_uploads
from tests.support.emulator import RunningEmulator
from tests.support.paid_workers import ledger_calls
from tests.support.waiting import eventually

NANO = Decimal("0.000000001")
MICRO = Decimal("0.000001")


@dataclass(frozen=True)
class Twice:
    """A submission run to the end, then the same documents submitted again (Rig.run_twice):
    each run's jobs, the ledger's rows and the emulator's stats after it."""

    submission: Submission
    jobs: list[Job]
    rows: list[LLMCall]
    stats: dict[str, Any]
    reruns: list[Job]
    rerun_rows: list[LLMCall]
    rerun_stats: dict[str, Any]


@dataclass
class Rig:
    client: QueueClient
    services: Services
    database_url: str

    async def submit(
        self, *uploads: Upload, budget: Decimal | None = None, batch_id: str | None = None
    ) -> Submission:
        return await submit_uploads(self.client, list(uploads), budget_usd=budget,
                                    batch_id=batch_id, services=self.services)  # fmt: skip

    async def finished(self, job_id: str, timeout_s: float = 60) -> Job:
        """The document's last job once it ended (a split document's merge job)."""

        async def done() -> Job | None:
            job = await self.client.get(job_id)
            if job.state == State.COMPLETE and isinstance(job.result, dict):
                if "callback_job" in job.result:
                    callback = await self.client.get(str(job.result["callback_job"]))
                    return callback if callback.done else None
            return job if job.done else None

        job: Job = await eventually(done, timeout_s, f"job {job_id} to end")
        await self.services.recorder.flush()
        return job

    def calls(self) -> list[LLMCall]:
        return ledger_calls(self.database_url)

    async def run_twice(self, emu: RunningEmulator, uploads: list[Upload], mode: str,
                        timeout_s: float = 90) -> Twice:  # fmt: skip
        """Submit `uploads` in `mode` and wait for every document, then submit them again
        in a new batch ("rerun") and wait again: what each run left in the ledger and in
        the emulator's stats."""
        first = await submit_uploads(self.client, uploads, mode=mode, services=self.services)
        jobs = [await self.finished(j, timeout_s=timeout_s) for j in first.job_ids]
        rows, stats = self.calls(), emu.stats()
        again = await submit_uploads(self.client, uploads, mode=mode, batch_id="rerun",
                                     services=self.services)  # fmt: skip
        reruns = [await self.finished(j, timeout_s=timeout_s) for j in again.job_ids]
        return Twice(first, jobs, rows, stats, reruns, self.calls(), emu.stats())

    def report(self) -> dict[str, Any]:
        engine = create_ledger_engine(self.database_url)
        try:
            with session_factory(engine)() as session:
                return cost_report(session)
        finally:
            engine.dispose()


# Batch Mode tests look at their Gemini batch job often (the defaults: 30 s, doubling to 10 min).
FAST_BATCH_POLL = {"batch_poll_s": 0.3, "batch_poll_max_s": 1.0}


def memo_uploads(n: int, tag: str = "Memo") -> list[Upload]:
    """`n` one-page PDFs, each a document of its own (its text differs): <tag>-<i>.pdf."""
    from tests.support.pdfs import make_pdf

    return [Upload(f"{tag.lower()}-{i}.pdf", make_pdf(1, f"{tag} {i}. Globex signed with "
                                                         "Initech."))
            for i in range(n)]  # fmt: skip


@contextlib.asynccontextmanager
async def running_pipeline(
    emu: RunningEmulator, redis_url: str, key_prefix: str, concurrency: int = 2,
    provider_name: str = "gemini", **settings: Any,
) -> AsyncIterator[Rig]:  # fmt: skip
    """A worker with the real services; settings come from the environment (pipeline_env)
    plus `settings`. The provider, against the emulator, calls itself `provider_name`."""
    import tasks.analyze  # noqa: F401  (registers the tasks)
    from pipeline.services import build_worker, open_services

    s = load_settings(key_prefix=key_prefix, **settings)
    client = QueueClient(connect_redis(redis_url), settings=s)
    provider = GeminiProvider(api_key=emu.api_key, base_url=emu.base_url, name=provider_name,
                              files_min_bytes=s.files_api_min_bytes)  # fmt: skip
    services = await open_services(client, provider=provider)
    worker = await build_worker(client, queues=["default"], concurrency=concurrency,
                                services=services)  # fmt: skip
    run = asyncio.create_task(worker.run(install_signals=False))
    try:
        yield Rig(client, services, str(s.database_url))
    finally:
        worker.stop()
        await asyncio.wait_for(run, 30)
        await services.aclose()
        await client.aclose()


def set_faults(emu: RunningEmulator, *faults: dict[str, Any]) -> None:
    """Replace the emulator's injected faults (pipeline/llm/emulator/faults.py)."""
    response = httpx.post(f"{emu.base_url}/_emulator/faults", json={"faults": list(faults)},
                          timeout=10)  # fmt: skip
    response.raise_for_status()


def money(value: Any) -> Decimal:
    return Decimal(str(value or 0)).quantize(NANO)


def assert_ledger_is_the_bill(rows: list[LLMCall], stats: dict[str, Any]) -> None:
    """Every paid attempt in the ledger, and the emulator's bill, agree to the token and to
    the nano-dollar (so certainly to $0.000001)."""
    paid = [r for r in rows if r.outcome != "from_store"]
    billed = stats["billed_total"]
    assert len([r for r in paid if r.outcome not in ("error", "rate_limited")]) == billed[
        "requests"
    ]
    assert sum(r.input_tokens for r in paid) == billed["input_tokens"]
    assert sum(r.output_tokens for r in paid) == billed["output_tokens"]
    assert sum(r.thinking_tokens for r in paid) == billed["thinking_tokens"]
    booked = sum((money(r.cost_usd) for r in paid), Decimal(0))
    assert abs(booked - Decimal(billed["cost_usd"])) < MICRO
    assert booked == money(billed["cost_usd"])


def unused_cost(rows: list[LLMCall]) -> Decimal:
    return sum((money(r.cost_usd) for r in rows if r.outcome in {o.value for o in UNUSED}),
               Decimal(0))  # fmt: skip
