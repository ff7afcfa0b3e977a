"""A Batch Mode answer obeys the stop rules of an interactive one (llm/stop.py,
tasks/analysis_call.py), end to end: the real google-genai client against the emulator, a
real worker, Redis and the SQLite ledger.

A batch answer blocked (SAFETY) ends its document failed with that reason and no further
call; one cut at MAX_TOKENS gets exactly the one retry at four times the output budget,
never a repeat at the same cap; one that fails validation gets the repair call. Each unused
batch answer is a ledger row of its own (at the batch rate, counted as wasted), and the
ledger equals the emulator's two bills."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from pipeline.queue.job import State
from tasks.batches import batch_view
from tasks.export import results_of
from tasks.submission import Upload, submit_uploads
from tests.support.emulator import RunningEmulator, start_emulator
from tests.support.paid_rig import FAST_BATCH_POLL, MICRO, money, running_pipeline, set_faults
from tests.support.pdfs import make_pdf


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    with start_emulator(batch_delay_s=1.0) as running:
        yield running


def _doc(marker: str) -> Upload:
    return Upload(f"{marker.lower()}.pdf", make_pdf(1, f"{marker} page {{n}}. Revenue rose."))


async def test_a_batch_answer_blocked_or_cut_gets_the_interactive_remedy_not_a_repeat(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, emu: RunningEmulator,
) -> None:  # fmt: skip
    set_faults(emu, {"kind": "finish", "reason": "SAFETY", "when": "FORBIDDEN"},
               {"kind": "verbose", "when": "LONGWINDED", "tokens": 6000})  # fmt: skip
    async with running_pipeline(emu, redis_url, key_prefix, **FAST_BATCH_POLL) as rig:
        sub = await submit_uploads(rig.client, [_doc("FORBIDDEN"), _doc("LONGWINDED"),
                                                _doc("PLAIN")],
                                   mode="batch", services=rig.services)  # fmt: skip
        blocked, cut, plain = [await rig.finished(j, timeout_s=90) for j in sub.job_ids]
        rows, report = rig.calls(), rig.report()
        view = await batch_view(rig.client, rig.services.engine, str(sub.batch_id))
    stats = emu.stats()
    sent = [(r["mode"], r["max_output_tokens"], r["finish_reason"]) for r in stats["requests"]]
    assert sorted(sent) == sorted([
        ("batch", 4096, "SAFETY"), ("batch", 4096, "MAX_TOKENS"), ("batch", 4096, "STOP"),
        ("interactive", 16384, "STOP"),  # the one retry, at 4x: no repeat at the same cap
    ]), sent  # fmt: skip
    assert blocked.state == State.FAILED and blocked.reason == "answer_blocked", blocked.error
    assert blocked.attempt == 1 and blocked.result is None
    assert "stopped for SAFETY" in (blocked.error or "")
    assert "Gemini batch job batches/" in (blocked.error or "")
    # The views say its batch answer was asked and paid for (not "no provider was called").
    shown = {r["name"]: r for r in results_of(view)}["forbidden.pdf"]
    assert shown["analysis"] is None and shown["provider"] == "gemini" and shown["calls"] == 1
    (row,) = [d for d in view.documents if d.name == "forbidden.pdf"]
    assert row.wasted == row.cost > 0
    assert cut.state == State.COMPLETE, cut.error
    assert plain.state == State.COMPLETE, plain.error
    batch_rows = sorted(r.outcome for r in rows if r.mode == "batch")
    assert batch_rows == ["blocked", "ok", "truncated"]
    interactive = [(r.outcome, r.cost_usd > 0) for r in rows
                   if r.mode != "batch" and r.outcome != "from_store"]  # fmt: skip
    assert interactive == [("ok", True)]
    truncated = next(r for r in rows if r.outcome == "truncated")
    assert "max_output_tokens=4096" in (truncated.error or "")
    # The ledger is both bills; what was paid and not used is the wasted spend.
    booked = sum((money(r.cost_usd) for r in rows), Decimal(0))
    billed = Decimal(stats["billed_total"]["cost_usd"]) + \
        Decimal(stats["batch"]["billed_total"]["cost_usd"])  # fmt: skip
    assert abs(booked - billed) <= MICRO
    unused = sum((money(r.cost_usd) for r in rows if r.outcome in ("blocked", "truncated")),
                 Decimal(0))  # fmt: skip
    assert money(report["total"]["wasted_usd"]) == unused > 0


async def test_a_batch_answer_that_fails_validation_gets_the_repair_call_not_a_repeat(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str,
) -> None:  # fmt: skip
    """Every answer of this emulator is cut mid-JSON (finishReason STOP): the batch's answer
    is invalid, so the document's one remedy is the repair call (which carries the batch
    answer and the document), as after an interactive first call; then it fails."""
    with start_emulator(batch_delay_s=1.0, bad_json_rate=1.0) as emu:
        async with running_pipeline(emu, redis_url, key_prefix, **FAST_BATCH_POLL) as rig:
            sub = await submit_uploads(rig.client, [_doc("MUDDLED")], mode="batch",
                                       services=rig.services)  # fmt: skip
            job = await rig.finished(sub.job_ids[0], timeout_s=90)
            rows = rig.calls()
        stats = emu.stats()
    assert job.state == State.FAILED and job.reason == "answer_invalid", job.error
    assert [r["mode"] for r in stats["requests"]] == ["batch", "interactive"]
    assert [(r.mode, r.outcome) for r in rows] == [("batch", "invalid"),
                                                   ("interactive", "invalid")]
    repair = rows[1]
    assert repair.cost_usd > 0 and repair.call_key != rows[0].call_key
