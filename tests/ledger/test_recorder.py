"""SqlRecorder against a real database (SQLite and PostgreSQL) and a real Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Engine, func, select

from pipeline.ledger import db
from pipeline.ledger.models import Batch, Document, JobRow, LLMCall
from pipeline.ledger.recorder import SqlRecorder
from pipeline.llm.attempts import Outcome
from tests.ledger.conftest import attempt, settle


def _row(engine: Engine, attempt_id: str) -> LLMCall | None:
    with db.session_factory(engine)() as session:
        return session.get(LLMCall, attempt_id)


async def test_started_then_settled(recorder: SqlRecorder, engine: Engine) -> None:
    call = attempt(estimated="0.02")
    await recorder.started(call)
    row = _row(engine, call.attempt_id)
    assert row is not None and row.outcome == "started" and row.finished_at is None
    assert row.estimated_cost_usd == Decimal("0.02")

    settle(call, Outcome.OK, "0.000123456", input_tokens=1300, output_tokens=50,
           thinking_tokens=200, cached_tokens=100, model_version="flash-lite-001")  # fmt: skip
    await recorder.settled(call)
    row = _row(engine, call.attempt_id)
    assert row is not None
    assert (row.outcome, row.input_tokens, row.output_tokens) == ("ok", 1300, 50)
    assert (row.thinking_tokens, row.cached_tokens) == (200, 100)
    assert row.cost_usd == Decimal("0.000123456")
    assert row.model_version == "flash-lite-001"
    assert row.finished_at is not None and row.latency_s == 1.5


async def test_replays_are_idempotent(recorder: SqlRecorder, engine: Engine) -> None:
    """A late `started` (a buffer replay) must not undo `settled`, and no row is doubled."""
    call = attempt()
    await recorder.started(call)
    settled = settle(call, Outcome.ERROR, "0.5", error="500 from provider")
    await recorder.settled(settled)
    await recorder.settled(settled)
    started_again = attempt()
    started_again.attempt_id = call.attempt_id
    await recorder.started(started_again)
    with db.session_factory(engine)() as session:
        assert session.scalar(select(func.count()).select_from(LLMCall)) == 1
        row = session.get(LLMCall, call.attempt_id)
        assert row is not None and row.outcome == "error" and row.cost_usd == Decimal("0.5")


class _Prices:
    def worst_case_cost(
        self, model: str, input_tokens: int, max_output_tokens: int, at: datetime
    ) -> Decimal:
        return Decimal("0.0125")


async def test_mark_abandoned(recorder: SqlRecorder, engine: Engine) -> None:
    reserved = attempt(job_id="job-a", estimated="0.03")
    unpriced = attempt(job_id="job-a", estimated="0")
    done = attempt(job_id="job-a")
    other_job = attempt(job_id="job-b")
    for call in (reserved, unpriced, done, other_job):
        await recorder.started(call)
    await recorder.settled(settle(done, Outcome.OK, "0.001"))

    assert await recorder.mark_abandoned("job-a", prices=_Prices()) == 2
    rows = {c.attempt_id: _row(engine, c.attempt_id) for c in (reserved, unpriced, done, other_job)}
    got = {k: (r.outcome, r.cost_usd) for k, r in rows.items() if r is not None}
    assert got[reserved.attempt_id] == ("abandoned", Decimal("0.03"))
    assert got[unpriced.attempt_id] == ("abandoned", Decimal("0.0125"))
    assert got[done.attempt_id] == ("ok", Decimal("0.001"))
    assert got[other_job.attempt_id][0] == "started"
    assert await recorder.mark_abandoned("job-a") == 0


async def test_mark_abandoned_spares_calls_started_after_the_lost_lease(
    recorder: SqlRecorder, engine: Engine
) -> None:
    """The job may already run again on another worker: its new call is live, not abandoned."""
    deadline = datetime.now(UTC)
    lost = attempt(job_id="job-c", started_at=deadline - timedelta(seconds=5))
    live = attempt(job_id="job-c", started_at=deadline + timedelta(seconds=1))
    for call in (lost, live):
        await recorder.started(call)
    assert await recorder.mark_abandoned("job-c", before=deadline) == 1
    lost_row, live_row = _row(engine, lost.attempt_id), _row(engine, live.attempt_id)
    assert lost_row is not None and lost_row.outcome == "abandoned"
    assert live_row is not None and live_row.outcome == "started"


async def test_abandoned_priced_by_the_real_price_table(
    recorder: SqlRecorder, engine: Engine
) -> None:
    from pipeline.llm.pricing import PriceTable

    prices = PriceTable.load()
    call = attempt(job_id="job-p", model="gemini-3.5-flash-lite", estimated="0")
    call.input_tokens = 1000
    await recorder.started(call)
    assert await recorder.mark_abandoned("job-p", prices=prices) == 1
    row = _row(engine, call.attempt_id)
    expected = prices.worst_case_cost("gemini-3.5-flash-lite", 1000, 2048, call.started_at)
    assert row is not None and row.outcome == "abandoned"
    assert expected > 0 and row.cost_usd == expected


async def test_task_layer_helpers(recorder: SqlRecorder, engine: Engine) -> None:
    await recorder.upsert_batch("b1", label="contracts", budget_usd=Decimal("12.50"))
    await recorder.upsert_batch("b1", status="done")
    sha = "a" * 64
    doc_id = await recorder.upsert_document(sha, file_name="x.pdf", size_bytes=1234, pages=3)
    await recorder.upsert_document(sha, pages=4)
    await recorder.upsert_job("j1", batch_id="b1", document_id=doc_id)
    await recorder.update_job_status("j1", "failed", attempts=2, last_error="boom")
    by = {"produced_by": {"provider": "gemini"}}
    await recorder.save_result(doc_id, "m", "v1", {"summary": "first", **by})
    await recorder.save_result(doc_id, "m", "v1", {"summary": "second", "n": [1, 2], **by})
    rehearsal = {"summary": "rehearsed", "produced_by": {"provider": "emulator"}}
    await recorder.save_result(doc_id, "m", "v1", rehearsal)  # kept beside, never over it

    second = {"summary": "second", "n": [1, 2], **by}
    assert await recorder.get_result(sha, "m", "v1", "gemini") == second
    assert await recorder.get_result(sha, "m", "v1", "emulator") == rehearsal
    assert await recorder.get_result(sha, "m", "v1", "offline") is None
    assert await recorder.get_result(sha, "m", "v2", "gemini") is None
    assert await recorder.get_result("b" * 64, "m", "v1", "gemini") is None
    with db.session_factory(engine)() as session:
        batch = session.get(Batch, "b1")
        assert batch is not None
        assert (batch.label, batch.status) == ("contracts", "done")
        assert batch.budget_usd == Decimal("12.5")
        doc = session.get(Document, doc_id)
        assert doc is not None and (doc.file_name, doc.bytes, doc.pages) == ("x.pdf", 1234, 4)
        job = session.get(JobRow, "j1")
        assert job is not None
        assert (job.batch_id, job.status, job.attempts) == ("b1", "failed", 2)
        assert job.last_error == "boom"


async def test_mark_abandoned_says_possibly_billed_only_of_gemini_calls(
    recorder: SqlRecorder, engine: Engine
) -> None:
    """A lost lease's calls are booked the same way whoever was asked, but only Gemini's
    are said to be possibly billed: the emulator's are a rehearsal's, the offline
    analyzer's asked no one."""
    calls = {}
    for provider in ("gemini", "emulator", "offline"):
        call = attempt(job_id="job-lost")
        call.provider = provider
        await recorder.started(call)
        calls[provider] = call.attempt_id
    assert await recorder.mark_abandoned("job-lost") == 3
    said = {p: (r.error or "") for p, i in calls.items() if (r := _row(engine, i)) is not None}
    assert "possibly billed" in said["gemini"], said
    assert "never billed" in said["emulator"] and "possibly" not in said["emulator"], said
    assert "$0" in said["offline"] and "billed" not in said["offline"], said
