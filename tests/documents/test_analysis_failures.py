"""Failure paths of the analysis task, run through the real queue, worker, ledger and the
real google-genai client against the emulator: the JSON repair call, a failed page range in
a split document, and Ctrl-C during `pipeline run`."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pipeline.llm.failure import ProviderCallError, ProviderFailure
from pipeline.llm.gemini import GeminiProvider
from pipeline.llm.provider import LLMRequest, LLMResponse
from pipeline.queue import QueueClient
from pipeline.queue.job import State
from pipeline.redis.connection import connect_redis
from pipeline.settings import load_settings
from tasks.schema import Analysis
from tasks.submission import Upload, submit_uploads
from tests.support import ROOT
from tests.support.cli import EXAMPLES
from tests.support.emulator import RunningEmulator, start_emulator
from tests.support.paid_workers import ledger_calls
from tests.support.pdfs import make_pdf
from tests.support.waiting import eventually


class BadJsonOnce:
    """The emulator's client, with the first answer cut mid-value as a model sometimes does."""

    def __init__(self, inner: GeminiProvider) -> None:
        self.inner = inner
        self.name = inner.name
        self.spoiled = 0

    async def generate(self, request: LLMRequest) -> LLMResponse:
        response = await self.inner.generate(request)
        if self.spoiled == 0:
            self.spoiled += 1
            return dataclasses.replace(response, text=response.text[:40], data=None)
        return response

    async def count_tokens(self, request: LLMRequest) -> int:
        return await self.inner.count_tokens(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class RefuseFirstPdf(BadJsonOnce):
    """Refuses (400) the first request carrying a PDF: one page range of a split document."""

    async def generate(self, request: LLMRequest) -> LLMResponse:
        if self.spoiled == 0 and any(p.has_bytes for p in request.parts):
            self.spoiled += 1
            raise ProviderCallError(ProviderFailure(400, "INVALID_ARGUMENT", "page range refused"))
        return await self.inner.generate(request)


async def _analyse(
    emu: RunningEmulator, redis_url: str, prefix: str, pdf: bytes, wrap: Any = None, **settings: Any
) -> tuple[QueueClient, str]:
    """Submit one PDF and run an in-process worker until the document's last job ends;
    returns the client and that job's id (the chord callback for a split document)."""
    import tasks.analyze  # noqa: F401  (registers the tasks)
    from pipeline.services import build_worker, open_services

    client = QueueClient(
        connect_redis(redis_url), settings=load_settings(key_prefix=prefix, **settings)
    )
    provider: Any = GeminiProvider(api_key=emu.api_key, base_url=emu.base_url)
    if wrap is not None:
        provider = wrap(provider)
    services = await open_services(client, provider=provider)
    worker = await build_worker(client, queues=["default"], concurrency=4, services=services)
    run = asyncio.create_task(worker.run(install_signals=False))
    try:
        sub = await submit_uploads(client, [Upload("doc.pdf", pdf)], services=services)
        job_id = sub.job_ids[0]

        async def last_job_done() -> str | None:
            job = await client.get(job_id)
            if job.state == State.COMPLETE and isinstance(job.result, dict):
                if "callback_job" in job.result:
                    cb = await client.get(str(job.result["callback_job"]))
                    return cb.id if cb.done else None
            return job.id if job.done else None

        last = await eventually(last_job_done, 60, "the document to finish")
        await services.recorder.flush()
        return client, str(last)
    finally:
        worker.stop()
        await asyncio.wait_for(run, 30)
        await services.aclose()


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    with start_emulator() as running:
        yield running


async def test_invalid_json_once_is_repaired_by_one_call(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, sredis: redis.Redis,
    emu: RunningEmulator,
) -> None:  # fmt: skip
    client, job_id = await _analyse(emu, redis_url, key_prefix, make_pdf(2), BadJsonOnce)
    try:
        job = await client.get(job_id)
    finally:
        await client.aclose()
    assert job.state == State.COMPLETE, job.error
    Analysis.model_validate(job.result)
    stats = emu.stats()
    assert stats["generate_requests"] == 2  # the analysis, then one repair
    assert [r["pdf_pages"] for r in stats["requests"]] == [2, 2]  # the repair saw the PDF too
    rows = ledger_calls(pipeline_env["PIPELINE_DATABASE_URL"])
    assert [r.outcome for r in rows] == ["invalid", "ok"]  # the bad answer: paid, not used
    assert len({r.call_key for r in rows}) == 2


async def test_invalid_json_twice_fails_the_job_clearly_and_both_calls_are_in_the_ledger(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, sredis: redis.Redis
) -> None:
    with start_emulator(bad_json_rate=1.0) as bad:
        client, job_id = await _analyse(bad, redis_url, key_prefix, make_pdf(2))
        try:
            job = await client.get(job_id)
        finally:
            await client.aclose()
        stats = bad.stats()
    assert job.state == State.FAILED
    assert job.error is not None and "model returned invalid JSON twice" in job.error
    assert job.reason == "answer_invalid"
    assert job.attempt == 1  # not retried: a retry would pay again for the same bad answer
    assert stats["generate_requests"] == 2
    rows = ledger_calls(pipeline_env["PIPELINE_DATABASE_URL"])
    assert [r.outcome for r in rows] == ["invalid", "invalid"]  # both billed, neither used
    assert all(r.cost_usd > 0 for r in rows)


async def test_a_failed_page_range_fails_the_document_once_without_a_reduce_call(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, sredis: redis.Redis,
    emu: RunningEmulator,
) -> None:  # fmt: skip
    """Decision: a split document with a failed page range ends failed (the chord callback
    names the failed ranges and how to requeue them); the reduce call is never paid for a
    partial document, and the other ranges' answers stay in the call store for a rerun."""
    # 560 tokens a page: 2 pages per map call -> 3 page ranges for 6 pages.
    client, last = await _analyse(
        emu, redis_url, key_prefix, make_pdf(6), RefuseFirstPdf, context_budget_tokens=4096 + 1200
    )
    try:
        callback = await client.get(last)
    finally:
        await client.aclose()
    assert callback.task == "reduce_analyses"
    assert callback.state == State.FAILED
    assert callback.error is not None
    assert "1 of 3 page ranges failed" in callback.error
    assert "page range refused" in callback.error  # the provider's own words
    assert callback.reason == "provider_refused"
    assert "requeueing cannot help" in callback.error  # a 400 would be refused again
    assert "pipeline dead requeue" not in callback.error
    assert emu.stats()["generate_requests"] == 2  # the two good ranges; no reduce call
    rows = ledger_calls(pipeline_env["PIPELINE_DATABASE_URL"])
    assert sorted(r.outcome for r in rows) == ["error", "ok", "ok"]


@pytest.mark.slow
def test_ctrl_c_during_run_stops_cleanly_and_a_rerun_pays_nothing_twice(
    pipeline_env: dict[str, str], sredis: redis.Redis, tmp_path: Path
) -> None:
    import os

    with start_emulator(latency_s=(1.5, 1.5)) as emu:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
        env.update({**pipeline_env, **emu.env, "GOOGLE_API_KEY": "", "PYTHONPATH": str(ROOT),
                    "PIPELINE_CPU_WORKERS": "1", "COLUMNS": "200"})  # fmt: skip
        cmd = [sys.executable, "-m", "pipeline", "run", *EXAMPLES, "--concurrency", "2"]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while emu.stats()["generate_requests"] < 1:
                assert proc.poll() is None, proc.communicate()
                if time.monotonic() > deadline:
                    raise AssertionError("no call started within 60 s")
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 130, out + err
        assert "Traceback" not in err, err
        assert "run the same command again" in out
        first = emu.stats()
        assert first["billed_repeats"] == 0

        again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=120)  # fmt: skip
        assert again.returncode == 0, again.stdout + again.stderr
        stats = emu.stats()
    assert "total spend" in again.stdout
    assert stats["billed_repeats"] == 0  # nothing answered (and billed) twice
    rows = ledger_calls(pipeline_env["PIPELINE_DATABASE_URL"])
    assert sum(r.outcome == "ok" for r in rows) == stats["generate_requests"] - stats[
        "by_status"
    ].get("429", 0)
