"""Resubmitting a document whose job ended badly starts a new run in the new batch instead of
answering with the dead job for a day: real Redis, SQLite ledger, the real google-genai client
against the emulator, an in-process worker."""

from __future__ import annotations

import asyncio

import redis

from pipeline.llm.gemini import GeminiProvider
from pipeline.llm.provider import Provider
from pipeline.queue.client import QueueClient
from pipeline.queue.job import State
from pipeline.redis.connection import connect_redis
from pipeline.settings import get_settings
from tasks.schema import Analysis
from tasks.submission import Upload, submit_uploads
from tests.support.emulator import start_emulator
from tests.support.pdfs import make_pdf
from tests.support.waiting import eventually


async def _run_until_done(client: QueueClient, provider: Provider, job_id: str) -> State:
    """Run an in-process worker with `provider` until `job_id` is terminal; its end state."""
    import tasks.analyze  # noqa: F401  (registers the tasks)
    from pipeline.services import build_worker, open_services

    services = await open_services(client, provider=provider)
    worker = await build_worker(client, queues=["default"], concurrency=2, services=services)
    run = asyncio.create_task(worker.run(install_signals=False))
    try:

        async def ended() -> State | None:
            job = await client.get(job_id)
            return job.state if job.done else None

        state: State = await eventually(ended, 60, f"job {job_id} to end")
        await services.recorder.flush()
        return state
    finally:
        worker.stop()
        await asyncio.wait_for(run, 30)
        await services.aclose()


async def test_failed_document_resubmitted_runs_again_and_completes(
    pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis
) -> None:
    client = QueueClient(connect_redis(redis_url), settings=get_settings())
    pdf = make_pdf(1)
    try:
        with start_emulator(latency_s=(0.0, 0.0)) as emu:
            first = await submit_uploads(client, [Upload("a.pdf", pdf)])
            (doc,) = first.documents
            assert doc.status == "queued" and doc.job_id
            # A wrong key: the emulator refuses it (4xx), so the job fails without retrying.
            wrong = GeminiProvider(api_key="not-the-key", base_url=emu.base_url)
            assert await _run_until_done(client, wrong, doc.job_id) == State.FAILED
            calls_after_failure = emu.stats()["generate_requests"]

            again = await submit_uploads(client, [Upload("a-again.pdf", pdf)])
            (redo,) = again.documents
            # A new run in the new batch, under its budget; the failed job stays as it ended.
            assert redo.status == "queued", redo
            assert redo.job_id != doc.job_id
            assert "failed" in (redo.reason or "") and doc.job_id in (redo.reason or "")
            assert (await client.get(doc.job_id)).state == State.FAILED

            right = GeminiProvider(api_key=emu.api_key, base_url=emu.base_url)
            assert await _run_until_done(client, right, redo.job_id) == State.COMPLETE
            job = await client.get(redo.job_id)
            Analysis.model_validate(job.result)
            assert job.batch == again.batch_id  # booked to, and bounded by, the new batch
            assert emu.stats()["generate_requests"] > calls_after_failure

            # Complete now: a third submission is a plain duplicate and runs nothing.
            third = await submit_uploads(client, [Upload("a.pdf", pdf)])
            assert [d.status for d in third.documents] == ["duplicate"]
            assert third.documents[0].job_id == redo.job_id
    finally:
        await client.aclose()


async def test_queued_document_resubmitted_is_a_duplicate_not_requeued(
    pipeline_env: dict[str, str], redis_url: str
) -> None:
    client = QueueClient(connect_redis(redis_url), settings=get_settings())
    try:
        pdf = make_pdf(1, "Still waiting {n}.")
        first = await submit_uploads(client, [Upload("w.pdf", pdf)])
        again = await submit_uploads(client, [Upload("w.pdf", pdf)])
        assert [d.status for d in again.documents] == ["duplicate"]
        assert again.documents[0].job_id == first.documents[0].job_id
        assert "not paid again" in (again.documents[0].reason or "")
    finally:
        await client.aclose()
