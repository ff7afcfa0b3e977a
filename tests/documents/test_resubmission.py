"""Resubmitting a document whose job ended badly starts a new run in the new batch instead of
answering with the dead job for a day: real Redis, SQLite ledger, the real google-genai client
against the emulator, an in-process worker."""

from __future__ import annotations

import redis

from pipeline.llm.gemini import GeminiProvider
from pipeline.queue.client import QueueClient
from pipeline.queue.job import State
from pipeline.redis.connection import connect_redis
from pipeline.settings import get_settings
from tasks.schema import Analysis
from tasks.submission import Upload, submit_uploads
from tests.documents.conftest import run_until_done
from tests.support.emulator import start_emulator
from tests.support.pdfs import make_pdf


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
            assert await run_until_done(client, doc.job_id, wrong) == State.FAILED
            calls_after_failure = emu.stats()["generate_requests"]

            again = await submit_uploads(client, [Upload("a-again.pdf", pdf)])
            (redo,) = again.documents
            # A new run in the new batch, under its budget; the failed job stays as it ended.
            assert redo.status == "queued", redo
            assert redo.job_id != doc.job_id
            assert "failed" in (redo.reason or "") and doc.job_id in (redo.reason or "")
            assert (await client.get(doc.job_id)).state == State.FAILED

            right = GeminiProvider(api_key=emu.api_key, base_url=emu.base_url)
            assert await run_until_done(client, redo.job_id, right) == State.COMPLETE
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
        # not run yet, so no result: it runs once for both, and "not paid again" is not said
        said = again.documents[0].reason or ""
        assert "queued: it runs once, not twice" in said and "not paid again" not in said, said
    finally:
        await client.aclose()
