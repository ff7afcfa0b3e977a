"""Every answer classified by its stop reason, end to end: google-genai against the emulator
taught each behaviour (field cases 08, 09), a real worker, Redis and SQLite ledger.

For each: the document's final status and typed reason, the ledger equal to the emulator's
bill to the token and the nano-dollar, wasted_usd equal to the cost of the unused answers,
no repair call on an answer that did not finish, and no replay of an unused answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import redis

from pipeline.queue.job import State
from tasks.submission import Upload
from tests.support.cli import run_cli
from tests.support.emulator import RunningEmulator, start_emulator
from tests.support.paid_rig import (
    assert_ledger_is_the_bill,
    money,
    running_pipeline,
    set_faults,
    unused_cost,
)
from tests.support.pdfs import make_pdf

MODEL = "gemini-3.5-flash-lite"  # the default model; 65,536 output tokens at most


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    with start_emulator() as running:
        yield running


def _doc(marker: str, pages: int = 1) -> Upload:
    return Upload(f"{marker.lower()}.pdf", make_pdf(pages, f"{marker} page {{n}}. Revenue rose."))


async def test_an_answer_cut_at_max_tokens_is_retried_once_with_a_larger_budget(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, sredis: redis.Redis,
    emu: RunningEmulator,
) -> None:  # fmt: skip
    set_faults(emu, {"kind": "verbose", "when": "LONGWINDED", "tokens": 6000})
    async with running_pipeline(emu, redis_url, key_prefix) as rig:
        sub = await rig.submit(_doc("LONGWINDED"))
        job = await rig.finished(sub.job_ids[0])
        rows, report = rig.calls(), rig.report()
    stats = emu.stats()
    assert job.state == State.COMPLETE, job.error
    sent = stats["requests"]
    assert [r["max_output_tokens"] for r in sent] == [4096, 16384]  # no repair at the same cap
    assert [r["finish_reason"] for r in sent] == ["MAX_TOKENS", "STOP"]
    assert all(r["pdf_pages"] == 1 for r in sent)
    assert [r.outcome for r in rows] == ["truncated", "ok"]
    assert rows[0].error is not None and "max_output_tokens=4096" in rows[0].error
    assert_ledger_is_the_bill(rows, stats)
    assert money(report["total"]["wasted_usd"]) == money(rows[0].cost_usd) > 0


async def test_an_answer_cut_twice_fails_saying_so_and_is_never_replayed(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, sredis: redis.Redis,
    emu: RunningEmulator,
) -> None:  # fmt: skip
    set_faults(emu, {"kind": "verbose", "when": "ENDLESS", "tokens": 100_000})
    async with running_pipeline(emu, redis_url, key_prefix) as rig:
        doc = _doc("ENDLESS")
        sub = await rig.submit(doc)
        job = await rig.finished(sub.job_ids[0])
        assert job.state == State.FAILED
        assert job.reason == "answer_truncated"
        assert job.error is not None and "answer truncated at max_output_tokens=16384" in job.error
        assert job.attempt == 1  # a retry would be cut the same way
        rows = rig.calls()
        assert [r.outcome for r in rows] == ["truncated", "truncated"]
        assert_ledger_is_the_bill(rows, emu.stats())
        assert money(rig.report()["total"]["wasted_usd"]) == unused_cost(rows) > 0
        sha = sub.documents[0].sha256 or ""
        assert await rig.services.recorder.get_result(sha, MODEL, sub.prompt_version,
                                                      "gemini") is None  # fmt: skip

        set_faults(emu)  # the model answers normally now
        again = await rig.submit(doc)
        assert again.documents[0].status == "queued"  # a new run, in this batch
        job = await rig.finished(again.job_ids[0])
        rows = rig.calls()
    stats = emu.stats()
    assert job.state == State.COMPLETE, job.error
    assert stats["generate_requests"] == 3  # a fresh call, nothing replayed from the store
    assert [r.outcome for r in rows] == ["truncated", "truncated", "ok"]
    assert_ledger_is_the_bill(rows, stats)


async def test_thinking_that_fills_the_output_budget_is_truncation_not_an_empty_analysis(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, sredis: redis.Redis,
    emu: RunningEmulator,
) -> None:  # fmt: skip
    set_faults(emu, {"kind": "think", "when": "PONDER", "tokens": 1_000_000})
    async with running_pipeline(emu, redis_url, key_prefix) as rig:
        sub = await rig.submit(_doc("PONDER"))
        job = await rig.finished(sub.job_ids[0])
        rows, report = rig.calls(), rig.report()
        stored = await rig.services.recorder.get_result(
            sub.documents[0].sha256 or "", MODEL, sub.prompt_version, "gemini"
        )
    stats = emu.stats()
    assert job.state == State.FAILED and job.reason == "answer_truncated"
    assert "16384 of them thinking" in (job.error or "")
    assert stored is None and job.result is None  # no invented, empty analysis
    assert [(r["max_output_tokens"], r["finish_reason"]) for r in stats["requests"]] == [
        (4096, "MAX_TOKENS"), (16384, "MAX_TOKENS"),
    ]  # fmt: skip
    assert [(r.outcome, r.output_tokens, r.thinking_tokens) for r in rows] == [
        ("truncated", 0, 4096), ("truncated", 0, 16384),
    ]  # fmt: skip
    assert_ledger_is_the_bill(rows, stats)
    assert money(report["total"]["wasted_usd"]) == money(report["total"]["cost_usd"]) > 0


async def test_thinking_that_overshoots_once_gets_room_on_the_retry(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, sredis: redis.Redis,
    emu: RunningEmulator,
) -> None:  # fmt: skip
    set_faults(emu, {"kind": "think", "when": "MUSING", "tokens": 5000})
    async with running_pipeline(emu, redis_url, key_prefix) as rig:
        sub = await rig.submit(_doc("MUSING"))
        job = await rig.finished(sub.job_ids[0])
        rows = rig.calls()
    stats = emu.stats()
    assert job.state == State.COMPLETE, job.error
    assert [r.outcome for r in rows] == ["truncated", "ok"]
    assert rows[1].thinking_tokens == 5000
    assert stats["requests"][1]["thinking_budget"] <= 16384 // 2  # room left for the answer
    assert_ledger_is_the_bill(rows, stats)


@pytest.mark.parametrize(
    ("fault", "named"),
    [
        ({"kind": "block", "reason": "PROHIBITED_CONTENT"}, "prompt blocked (PROHIBITED_CONTENT)"),
        ({"kind": "finish", "reason": "SAFETY"}, "stopped for SAFETY"),
        ({"kind": "finish", "reason": "RECITATION"}, "stopped for RECITATION"),
    ],
)
async def test_a_blocked_answer_fails_the_document_at_once_naming_the_reason(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, sredis: redis.Redis,
    emu: RunningEmulator, fault: dict[str, str], named: str,
) -> None:  # fmt: skip
    set_faults(emu, {**fault, "when": "FORBIDDEN"})
    async with running_pipeline(emu, redis_url, key_prefix) as rig:
        doc = _doc("FORBIDDEN")
        sub = await rig.submit(doc)
        job = await rig.finished(sub.job_ids[0])
        assert job.state == State.FAILED and job.reason == "answer_blocked"
        assert job.error is not None and named in job.error
        assert job.attempt == 1 and job.result is None
        rows = rig.calls()
        assert [r.outcome for r in rows] == ["blocked"]  # no repair call, no retry
        assert rows[0].input_tokens > 0 and rows[0].output_tokens == 0
        assert_ledger_is_the_bill(rows, emu.stats())
        assert money(rig.report()["total"]["wasted_usd"]) == money(rows[0].cost_usd) > 0

        again = await rig.submit(doc)  # resubmitted: asked afresh, never replayed
        job = await rig.finished(again.job_ids[0])
        rows = rig.calls()
    stats = emu.stats()
    assert job.state == State.FAILED and job.reason == "answer_blocked"
    assert stats["generate_requests"] == 2
    assert [r.outcome for r in rows] == ["blocked", "blocked"]
    assert_ledger_is_the_bill(rows, stats)


async def test_an_unaffected_document_in_the_same_batch_is_untouched(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, sredis: redis.Redis,
    emu: RunningEmulator,
) -> None:  # fmt: skip
    set_faults(emu, {"kind": "block", "when": "FORBIDDEN"})
    async with running_pipeline(emu, redis_url, key_prefix) as rig:
        sub = await rig.submit(_doc("FORBIDDEN"), _doc("HARMLESS"), budget=Decimal("1"))
        jobs = [await rig.finished(j) for j in sub.job_ids]
        rows, report = rig.calls(), rig.report()
    assert [(j.state, j.reason) for j in jobs] == [
        (State.FAILED, "answer_blocked"), (State.COMPLETE, None),
    ]  # fmt: skip
    assert sorted(r.outcome for r in rows) == ["blocked", "ok"]
    assert_ledger_is_the_bill(rows, emu.stats())
    assert money(report["total"]["wasted_usd"]) == unused_cost(rows)
    # `pipeline status` suggests no retry that would only be refused, and paid, again
    text = run_cli({**pipeline_env, **emu.env}, "status", sub.batch_id, columns=400).stdout
    assert ("1 document failed because the provider blocked the request or its answer: the "
            "same request would be refused again, so retrying pays again for nothing") in text
    assert "pipeline retry" not in text, text


async def test_an_answer_the_client_cannot_read_is_booked_at_its_worst_case(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, sredis: redis.Redis,
    emu: RunningEmulator,
) -> None:  # fmt: skip
    """The emulator answers and bills, but cuts every 200 body mid-JSON: google-genai fails
    after the server answered. Each call may have been billed, so its ledger row carries its
    reserved worst case (at least the bill, and never $0), counted as wasted. It is no
    refusal: the job asks again within its attempts (3), then ends saying what to check,
    never that the provider refused it."""
    set_faults(emu, {"kind": "garbled", "when": "GARBLED"})
    async with running_pipeline(emu, redis_url, key_prefix) as rig:
        sub = await rig.submit(_doc("GARBLED"))
        job = await rig.finished(sub.job_ids[0])
        rows, report = rig.calls(), rig.report()
    stats = emu.stats()
    assert job.state == State.DEAD and job.reason == "answer_malformed", (job.state, job.error)
    assert job.attempt == job.max_attempts == 3
    error = job.error or ""
    assert "the model's answer was not valid JSON" in error and "refused" not in error, error
    assert "last attempt (3 of 3)" in error and "pipeline retry" in error, error
    assert stats["generate_requests"] == 3 and stats["billed_total"]["requests"] == 3
    assert [r.outcome for r in rows] == ["error"] * 3
    assert all(r.cost_usd == r.estimated_cost_usd > 0 for r in rows)
    assert sum((money(r.cost_usd) for r in rows), Decimal(0)) >= money(
        stats["billed_total"]["cost_usd"])  # fmt: skip
    assert money(report["total"]["wasted_usd"]) == sum((money(r.cost_usd) for r in rows),
                                                       Decimal(0))  # fmt: skip


async def test_one_unreadable_answer_is_asked_again_and_the_next_one_is_used(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, sredis: redis.Redis,
    emu: RunningEmulator, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """One billed answer cut mid-JSON (`garbled`, once) is a malformed answer, not a
    permanent refusal: booked at its worst case as wasted, the job's next attempt asks
    again and completes; the first attempt's reason says what happened and what follows."""
    set_faults(emu, {"kind": "garbled", "when": "Bill to", "times": 1})
    async with running_pipeline(emu, redis_url, key_prefix) as rig:
        sub = await rig.submit(Upload("invoice.pdf", make_pdf(1, "Invoice. Bill to Initech.")))
        job = await rig.finished(sub.job_ids[0], timeout_s=90)
        rows, report = rig.calls(), rig.report()
    stats = emu.stats()
    assert job.state == State.COMPLETE and job.attempt == 2, (job.state, job.error)
    assert stats["generate_requests"] == 2 and stats["billed_total"]["requests"] == 2
    assert [r.outcome for r in rows] == ["error", "ok"]
    garbled = rows[0]
    assert garbled.cost_usd == garbled.estimated_cost_usd > 0  # possibly billed: never $0
    assert "MALFORMED_ANSWER" in (garbled.error or "")
    assert money(report["total"]["wasted_usd"]) == money(garbled.cost_usd)
    said = [r.getMessage() for r in caplog.records if r.name == "pipeline.worker.jobs"
            and " retry in " in r.getMessage()]  # fmt: skip
    assert len(said) == 1, said
    assert "not valid JSON" in said[0] and "counted as wasted" in said[0], said
    assert "retried 1 of 2 times (attempt 2 of 3 next)" in said[0], said
    assert "provider_refused" not in said[0] and "permanent" not in said[0], said
