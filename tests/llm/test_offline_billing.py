"""A provider that never bills reserves nothing and books $0, on success and on failure,
and reads exactly the PDFs submit accepts (field case 14): the offline analyzer with a real
Redis limiter, budget and call store, and a real worker and ledger for the document path."""

from __future__ import annotations

import asyncio
import io
from decimal import Decimal

import pytest
import redis
import redis.asyncio as aioredis
from pypdf import PdfReader, PdfWriter

from pipeline.errors import BadDocument, Permanent, Reason
from pipeline.failure_policy import failed_call
from pipeline.ledger.budget import Budget
from pipeline.llm.attempts import MemoryRecorder, Outcome
from pipeline.llm.caller import LLMCaller
from pipeline.llm.callstore import CallStore, call_key
from pipeline.llm.limiter import Limiter
from pipeline.llm.offline import OfflineProvider
from pipeline.llm.pricing import PriceTable
from pipeline.llm.provider import LLMRequest, Part
from pipeline.llm.retry import RetryPolicy
from pipeline.queue import QueueClient
from pipeline.queue.job import Job, State
from pipeline.redis.connection import connect_redis
from pipeline.redis.keys import Keys
from pipeline.settings import load_settings
from tasks.submission import Upload, submit_uploads
from tests.support.paid_workers import ledger_calls
from tests.support.pdfs import make_pdf
from tests.support.waiting import eventually

MODEL = "gemini-3.5-flash-lite"
LIMIT = Decimal("0.000001")  # far below any paid call's bound


def _caller(
    aredis: aioredis.Redis, keys: Keys, recorder: MemoryRecorder
) -> tuple[LLMCaller, Budget]:
    settings = load_settings(rpm=6000, tpm=10_000_000)
    caller = LLMCaller(OfflineProvider(), Limiter(aredis, keys, settings),
                       CallStore(aredis, keys, ttl_s=60), recorder, PriceTable.load(),
                       policy=RetryPolicy(max_attempts=3, initial_delay_s=0.01))  # fmt: skip
    return caller, Budget(aredis, keys, settings)


async def test_offline_success_and_failure_reserve_nothing_and_book_zero(
    aredis: aioredis.Redis, keys: Keys
) -> None:
    recorder = MemoryRecorder()
    caller, budget = _caller(aredis, keys, recorder)
    good = LLMRequest(model=MODEL, parts=(Part.pdf(make_pdf(1)), Part(text="Summarise.")))
    await caller.call(good, budget=await budget.for_call("b", LIMIT))  # would not fit if paid
    bad = LLMRequest(model=MODEL, parts=(Part.pdf(b"%PDF-1.4 not really"), Part(text="x")))
    with pytest.raises(BadDocument) as caught:
        await caller.call(bad, budget=await budget.for_call("b", LIMIT))
    calls = recorder.calls.values()
    outcomes = sorted((c.outcome, c.cost_usd, c.estimated_cost_usd) for c in calls)
    zero = Decimal(0)
    assert outcomes == [(Outcome.ERROR, zero, zero), (Outcome.OK, zero, zero)]  # one each
    status = (await budget.status("b", LIMIT))["batch"]
    assert status.spent_usd == 0 and status.reserved_usd == 0
    steer = failed_call(caught.value)
    assert isinstance(steer, Permanent) and steer.reason is Reason.BAD_INPUT  # not retried


async def test_an_offline_answer_never_enters_the_call_store(
    aredis: aioredis.Redis, keys: Keys
) -> None:
    """The call store keeps paid answers from being paid again; the offline analyzer's are
    not paid, and a billed provider (the emulator, Gemini) asking the same request after the
    demo must get its own answer, not the offline one replayed."""
    caller, budget = _caller(aredis, keys, MemoryRecorder())
    request = LLMRequest(model=MODEL, parts=(Part.pdf(make_pdf(1)), Part(text="Summarise.")))
    await caller.call(request, budget=await budget.for_call("b", LIMIT))
    assert await caller.store.get(call_key(request, caller.provider.name)) is None


def _empty_password_pdf(algorithm: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(2, "Invoice {n}. Amount due."))))
    writer.encrypt(user_password="", owner_password="owner-secret", algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.mark.parametrize("algorithm", ["AES-256", "RC4-128"])
async def test_an_empty_password_pdf_submit_accepts_is_analysed_offline_for_free(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, sredis: redis.Redis,
    algorithm: str,
) -> None:  # fmt: skip
    import tasks.analyze  # noqa: F401  (registers the tasks)
    from pipeline.services import build_worker, open_services

    data = _empty_password_pdf(algorithm)
    assert PdfReader(io.BytesIO(data)).is_encrypted
    client = QueueClient(connect_redis(redis_url), settings=load_settings(key_prefix=key_prefix))
    services = await open_services(client)  # PIPELINE_PROVIDER=offline
    worker = await build_worker(client, queues=["default"], concurrency=1, services=services)
    run = asyncio.create_task(worker.run(install_signals=False))
    try:
        sub = await submit_uploads(client, [Upload("locked.pdf", data)], services=services,
                                   budget_usd=LIMIT)  # fmt: skip
        assert sub.documents[0].status == "queued"

        async def ended() -> Job | None:
            job = await client.get(sub.job_ids[0])
            return job if job.done else None

        job: Job = await eventually(ended, 60, "the document to end")
        await services.recorder.flush()
        status = (await services.budget.status(sub.batch_id, LIMIT))["batch"]
    finally:
        worker.stop()
        await asyncio.wait_for(run, 30)
        await services.aclose()
        await client.aclose()
    assert job.state == State.COMPLETE, job.error
    assert job.attempt == 1
    assert "Invoice" in str(job.result)  # the pages were read
    rows = ledger_calls(pipeline_env["PIPELINE_DATABASE_URL"])
    zero = Decimal(0)
    assert [(r.outcome, r.cost_usd, r.estimated_cost_usd) for r in rows] == [("ok", zero, zero)]
    assert status.spent_usd == 0 and status.reserved_usd == 0
