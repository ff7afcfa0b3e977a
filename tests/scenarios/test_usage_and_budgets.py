"""Usage the provider leaves out, and budgets that are a bound, end to end through
google-genai against the emulator (field cases 10 and 12) with a real worker and ledger.

Missing usage is booked at the call's bound (the countTokens input + maxOutputTokens +
thinking budget), flagged and warned once per batch; partial usage fills what it can. The
reservation is the exact count, so a PDF billed above its page estimate is refused before it
is sent, and a bill above its reservation stops the batch until a person raises the limit."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redis

from pipeline.llm.pricing import PriceTable
from pipeline.llm.provider import Usage
from pipeline.queue.job import State
from tasks.plan import OUTPUT_BOUND_TOKENS, analyze_prompt, estimate_document
from tasks.submission import Upload
from tests.support.emulator import RunningEmulator, start_emulator
from tests.support.paid_rig import (
    assert_ledger_is_the_bill,
    money,
    running_pipeline,
    set_faults,
)
from tests.support.pdfs import make_pdf

MODEL = "gemini-3.5-flash-lite"


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    with start_emulator() as running:
        yield running


def _doc(marker: str, n: int = 1) -> Upload:
    return Upload(f"{marker.lower()}-{n}.pdf", make_pdf(1, f"{marker} copy {n}. Costs fell."))


async def test_missing_usage_is_booked_at_the_bound_flagged_and_warned_once_per_batch(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, sredis: redis.Redis,
    emu: RunningEmulator, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    set_faults(emu, {"kind": "no_usage", "when": "UNMETERED"})
    with caplog.at_level(logging.WARNING, logger="pipeline.llm.caller"):
        async with running_pipeline(emu, redis_url, key_prefix) as rig:
            sub = await rig.submit(_doc("UNMETERED", 1), _doc("UNMETERED", 2))
            jobs = [await rig.finished(j) for j in sub.job_ids]
            rows = rig.calls()
    stats = emu.stats()
    assert all(j.state == State.COMPLETE for j in jobs), [j.error for j in jobs]
    assert [r["usage_reported"] for r in stats["requests"]] == ["none", "none"]
    prices = PriceTable.load()
    billed = sorted(stats["requests"], key=lambda r: r["input_tokens"])
    for row, bill in zip(sorted(rows, key=lambda r: r.input_tokens), billed, strict=True):
        assert row.outcome == "ok" and row.usage_missing
        assert row.input_tokens == bill["input_tokens"]  # countTokens: the exact input
        assert row.output_tokens + row.thinking_tokens == OUTPUT_BOUND_TOKENS  # the cap
        bound = prices.cost(MODEL, Usage(input_tokens=row.input_tokens,
                                         output_tokens=OUTPUT_BOUND_TOKENS), datetime.now(UTC))
        assert money(row.cost_usd) == bound >= Decimal(bill["cost_usd"]) > 0  # never $0
    warned = [r for r in caplog.records if "booked at its bound" in r.getMessage()]
    assert len(warned) == 1 and sub.batch_id in warned[0].getMessage()


async def test_partial_usage_fills_from_the_count_and_the_total(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, sredis: redis.Redis,
    emu: RunningEmulator,
) -> None:  # fmt: skip
    set_faults(emu, {"kind": "total_only", "when": "TOTALONLY"})
    async with running_pipeline(emu, redis_url, key_prefix) as rig:
        sub = await rig.submit(_doc("TOTALONLY"))
        job = await rig.finished(sub.job_ids[0])
        (row,) = rig.calls()
    stats = emu.stats()
    (bill,) = stats["requests"]
    assert job.state == State.COMPLETE, job.error
    assert bill["usage_reported"] == "total_only"
    assert row.usage_missing
    assert row.input_tokens == bill["input_tokens"]
    assert row.output_tokens + row.thinking_tokens == bill["output_tokens"] + bill[
        "thinking_tokens"
    ]
    assert money(row.cost_usd) == money(stats["billed_total"]["cost_usd"])  # exact, not a bound


async def test_a_pdf_counted_above_its_page_estimate_is_refused_before_it_is_sent(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, sredis: redis.Redis,
    emu: RunningEmulator,
) -> None:  # fmt: skip
    """Case 12: a one-page PDF billed at 60,000 prompt tokens, batch budget $0.015. The
    page estimate (560 tokens) would fit; the count does not, so nothing is sent."""
    set_faults(emu, {"kind": "inflate", "when": "SCANNED", "tokens": 60_000})
    small_doc = _doc("SCANNED", 1)
    by_pages = estimate_document(PriceTable.load(), MODEL, analyze_prompt(), 1,
                                 len(small_doc.data), 1_000_000)["worst_case_usd"]  # fmt: skip
    assert by_pages < Decimal("0.015")  # the premise: by its pages it would fit
    async with running_pipeline(emu, redis_url, key_prefix) as rig:
        small = await rig.submit(small_doc, budget=Decimal("0.015"))
        refused = await rig.finished(small.job_ids[0])
        big = await rig.submit(_doc("SCANNED", 2), budget=Decimal("0.05"))
        done = await rig.finished(big.job_ids[0])
        rows = rig.calls()
        status = await rig.services.budget.status(small.batch_id, Decimal("0.015"))
        status_big = await rig.services.budget.status(big.batch_id, Decimal("0.05"))
    stats = emu.stats()
    assert refused.state == State.OVER_BUDGET and refused.reason == "over_budget"
    assert status["batch"].spent_usd == 0 and status["batch"].reserved_usd == 0
    assert done.state == State.COMPLETE, done.error
    assert stats["generate_requests"] == 1 and stats["count_requests"] >= 2
    (row,) = rows
    assert row.batch_id == big.batch_id and row.input_tokens > 60_000
    assert money(row.estimated_cost_usd) >= money(row.cost_usd)  # the bound held
    assert status_big["batch"].spent_usd == money(row.cost_usd) <= Decimal("0.05")
    assert_ledger_is_the_bill(rows, stats)


async def test_a_batch_budget_is_never_passed_at_the_provider(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, sredis: redis.Redis,
    emu: RunningEmulator,
) -> None:  # fmt: skip
    """Four documents at 10,000 tokens a page, $0.025: each call's bound (~$0.0158) is
    reserved before it is sent, so the calls that fit go and the rest end over_budget; the
    provider's bill stays under the budget."""
    set_faults(emu, {"kind": "inflate", "when": "DENSE", "tokens": 10_000})
    limit = Decimal("0.025")
    async with running_pipeline(emu, redis_url, key_prefix, concurrency=1) as rig:
        sub = await rig.submit(*(_doc("DENSE", n) for n in range(4)), budget=limit)
        jobs = [await rig.finished(j) for j in sub.job_ids]
        rows = rig.calls()
        status = await rig.services.budget.status(sub.batch_id, limit)
    stats = emu.stats()
    states = [j.state for j in jobs]
    assert states.count(State.COMPLETE) == 3 and states.count(State.OVER_BUDGET) == 1
    assert stats["generate_requests"] == 3
    assert Decimal(stats["billed_total"]["cost_usd"]) <= limit
    assert status["batch"].spent_usd == money(stats["billed_total"]["cost_usd"])
    assert all(money(r.estimated_cost_usd) >= money(r.cost_usd) for r in rows)
    assert_ledger_is_the_bill(rows, stats)


async def test_a_bill_above_its_reservation_is_booked_and_stops_the_batch_until_raised(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, sredis: redis.Redis,
    emu: RunningEmulator, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    set_faults(emu, {"kind": "overbill", "when": "SURPRISE", "tokens": 100_000})
    limit = Decimal("1")
    with caplog.at_level(logging.ERROR, logger="pipeline.llm.caller"):
        async with running_pipeline(emu, redis_url, key_prefix, concurrency=1) as rig:
            first = await rig.submit(_doc("SURPRISE"), budget=limit)
            overrun = await rig.finished(first.job_ids[0])
            ordinary = _doc("ORDINARY")
            later = await rig.submit(ordinary, budget=limit, batch_id=first.batch_id)
            stopped = await rig.finished(later.job_ids[0])
            sent_before_raise = emu.stats()["generate_requests"]
            (scope, *_) = rig.services.budget.scopes(first.batch_id, limit)
            await rig.services.budget.raise_limit(scope, Decimal("2"))
            again = await rig.submit(ordinary, budget=limit, batch_id=first.batch_id)
            resumed = await rig.finished(again.job_ids[0])
            rows = rig.calls()
    stats = emu.stats()
    assert overrun.state == State.COMPLETE, overrun.error  # the answer was paid for: used
    over = rows[0]
    assert over.error is not None and over.error.startswith("budget overrun")
    assert money(over.cost_usd) > money(over.estimated_cost_usd)  # booked in full
    assert any("over its reservation" in r.getMessage() for r in caplog.records)
    assert stopped.state == State.OVER_BUDGET and stopped.reason == "budget_overrun"
    assert sent_before_raise == 1  # nothing admitted while stopped
    assert again.documents[0].status == "queued"  # a new run, in this batch
    assert resumed.state == State.COMPLETE, resumed.error
    assert stats["generate_requests"] == 2
    assert_ledger_is_the_bill(rows, stats)
