"""Documents submitted with mode=batch, end to end: a real worker, Redis, the SQLite ledger,
the real google-genai client and the emulator. Five documents make one Gemini batch job and
no generateContent call, all complete, and the ledger equals the emulator's batch bill (50 %)
to $0.000001; a re-run of the same documents pays nothing."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from pipeline.llm.pricing import PriceTable
from pipeline.llm.provider import Usage
from pipeline.queue.job import State
from tasks.submission import submit_uploads
from tests.support.cli import run_cli
from tests.support.emulator import RunningEmulator, start_emulator
from tests.support.paid_rig import FAST_BATCH_POLL, MICRO, memo_uploads, money, running_pipeline


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    with start_emulator(batch_delay_s=1.5) as running:
        yield running


def _costs(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(env, "costs", "--by", "mode", *args)


async def test_five_documents_in_batch_mode_make_one_job_and_cost_half(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, emu: RunningEmulator,
) -> None:  # fmt: skip
    docs = memo_uploads(5)
    async with running_pipeline(emu, redis_url, key_prefix, **FAST_BATCH_POLL) as rig:
        twice = await rig.run_twice(emu, docs, "batch")
    sub, jobs, rows, stats = twice.submission, twice.jobs, twice.rows, twice.stats
    reruns, rerun_rows, after = twice.reruns, twice.rerun_rows, twice.rerun_stats
    assert len(sub.job_ids) == 5
    assert all(j.state == State.COMPLETE for j in jobs), [j.error for j in jobs]
    results = [j.result for j in jobs]
    assert all(isinstance(r, dict) and r["summary"] for r in results)
    assert stats["generate_requests"] == 0
    assert stats["batch"]["jobs_created"] == 1 and stats["batch"]["requests"] == 5
    batch_rows = [r for r in rows if r.mode == "batch"]
    assert len(batch_rows) == 5 and {r.outcome for r in batch_rows} == {"ok"}
    assert all(r.outcome == "from_store" and r.cost_usd == 0 for r in rows if r.mode != "batch")
    booked = sum((money(r.cost_usd) for r in rows), Decimal(0))
    billed = Decimal(stats["batch"]["billed_total"]["cost_usd"])
    assert abs(booked - billed) <= MICRO
    prices = PriceTable.load()
    interactive = Decimal(0)
    for r in batch_rows:
        usage = Usage(input_tokens=r.input_tokens, output_tokens=r.output_tokens,
                      thinking_tokens=r.thinking_tokens)  # fmt: skip
        interactive += prices.cost(r.model_version or r.model, usage, r.started_at)
    assert abs(interactive / 2 - booked) <= MICRO
    # Each result shows what it really cost: the batch price.
    shown = sum((Decimal(str(r["used_answers_cost_usd"])) for r in results
                 if isinstance(r, dict)), Decimal(0))  # fmt: skip
    assert abs(shown - booked) <= MICRO
    # The re-run: results from the ledger, no new batch job, no new bill.
    assert all(j.state == State.COMPLETE for j in reruns)
    assert after["batch"]["jobs_created"] == 1 and after["generate_requests"] == 0
    assert after["batch"]["billed_total"] == stats["batch"]["billed_total"]
    assert sum((money(r.cost_usd) for r in rerun_rows), Decimal(0)) == booked
    # `pipeline costs --by mode`: spend per mode, and what Batch Mode saved.
    out = _costs(pipeline_env, "--format", "json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    by_mode = {row["key"]: row for row in report["rows"]}
    assert Decimal(by_mode["batch"]["cost_usd"]) == booked.quantize(Decimal(by_mode["batch"][
        "cost_usd"]))
    assert Decimal(by_mode["interactive"]["cost_usd"]) == 0  # the from-store rows
    assert abs(Decimal(report["saved_usd"]) - (interactive - booked)) <= MICRO
    table = _costs(pipeline_env)
    assert f"Batch Mode saved ${report['saved_usd']}" in table.stdout, table.stdout


async def test_a_rehearsals_batch_group_is_never_taken_for_a_real_runs(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, emu: RunningEmulator,
) -> None:  # fmt: skip
    """The same documents in Batch Mode, first rehearsed (the provider calls itself the
    emulator), then with a real key against the same Redis: the second run makes its own
    batch job and its results say who answered, not the rehearsal's group replayed."""
    docs = memo_uploads(2)
    done = {}
    for name in ("emulator", "gemini"):
        async with running_pipeline(emu, redis_url, key_prefix, provider_name=name,
                                    **FAST_BATCH_POLL) as rig:  # fmt: skip
            sub = await submit_uploads(rig.client, docs, mode="batch", services=rig.services)
            done[name] = [await rig.finished(j, timeout_s=90) for j in sub.job_ids]
    for name, jobs in done.items():
        assert all(j.state == State.COMPLETE for j in jobs), [j.error for j in jobs]
        assert {j.result["produced_by"]["provider"] for j in jobs} == {name}  # type: ignore[index]
    assert emu.stats()["batch"]["jobs_created"] == 2


async def test_the_group_worst_case_is_held_before_create_and_settled_per_response(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, emu: RunningEmulator,
) -> None:  # fmt: skip
    docs = memo_uploads(3)
    limit = Decimal("5.00")
    async with running_pipeline(emu, redis_url, key_prefix, **FAST_BATCH_POLL) as rig:
        sub = await submit_uploads(rig.client, docs, mode="batch", budget_usd=limit,
                                   services=rig.services)  # fmt: skip
        jobs = [await rig.finished(j, timeout_s=90) for j in sub.job_ids]
        status = await rig.services.budget.status(sub.batch_id, limit)
        rows = rig.calls()
    assert all(j.state == State.COMPLETE for j in jobs), [j.error for j in jobs]
    booked = sum((money(r.cost_usd) for r in rows), Decimal(0))
    assert booked > 0
    assert abs(status["batch"].spent_usd - booked) <= MICRO
    assert status["batch"].reserved_usd == 0


async def test_a_budget_below_the_group_worst_case_creates_no_batch_job(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, emu: RunningEmulator,
) -> None:  # fmt: skip
    docs = memo_uploads(3)
    async with running_pipeline(emu, redis_url, key_prefix, **FAST_BATCH_POLL) as rig:
        # Room for one request's worst case at the batch rate (~$0.0066), not for three.
        sub = await submit_uploads(rig.client, docs, mode="batch", budget_usd=Decimal("0.01"),
                                   services=rig.services)  # fmt: skip
        jobs = [await rig.finished(j, timeout_s=90) for j in sub.job_ids]
        status = await rig.services.budget.status(sub.batch_id, Decimal("0.01"))
        rows = rig.calls()
    stats = emu.stats()
    assert all(j.state != State.COMPLETE for j in jobs)
    assert all("budget" in (j.error or "") for j in jobs), [j.error for j in jobs]
    assert stats["batch"]["jobs_created"] == 0 and stats["generate_requests"] == 0
    assert rows == [] and status["batch"].reserved_usd == 0


async def test_status_shows_documents_waiting_in_the_gemini_batch(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str,
) -> None:  # fmt: skip
    from pipeline.api.dashboard.state import dashboard_state
    from tasks.batches import batch_view
    from tests.support.waiting import eventually

    with start_emulator(batch_delay_s=120) as slow:
        async with running_pipeline(slow, redis_url, key_prefix, **FAST_BATCH_POLL) as rig:
            sub = await submit_uploads(rig.client, memo_uploads(2), mode="batch",
                                       services=rig.services)

            async def waiting() -> list[dict[str, str]] | None:
                view = await batch_view(rig.client, rig.services.engine, sub.batch_id)
                waits = [{"kind": d.state.kind or "", "reason": d.state.reason or ""}
                         for d in view.documents if d.status == "waiting"]  # fmt: skip
                # (a member that met the create lock first says so, then looks again)
                seen = [w for w in waits if w["reason"].startswith("in Gemini batch ")]
                return waits if len(seen) == 2 else None

            waits = await eventually(waiting, 60, "both documents to wait in the batch")

            async def on_the_board() -> dict[str, Any] | None:
                # A document's job runs for a moment at each poll (FAST_BATCH_POLL): the dashboard
                # is read until it catches both between polls, as `waiting` was.
                board = await dashboard_state(rig.client, rig.services.engine,
                                              rig.services.budget)  # fmt: skip
                (row,) = [b for b in board["batches"] if b["id"] == sub.batch_id]
                return row if sum(w["documents"] for w in row["waiting"]) == 2 else None

            row = await eventually(on_the_board, 60, "the dashboard to show both waiting")
            stats = slow.stats()
    assert {w["kind"] for w in waits} == {"in_batch"}
    for wait in waits:
        assert wait["reason"].startswith("in Gemini batch batches/"), wait
        assert "state PENDING since 20" in wait["reason"] or "state RUNNING since 20" in wait[
            "reason"
        ]
    assert stats["batch"]["jobs_created"] == 1 and stats["generate_requests"] == 0
    # The dashboard says the same, from the same derivation.
    assert all(w["reason"].startswith("in Gemini batch batches/") for w in row["waiting"])


async def test_an_expired_batch_job_is_finished_interactively_and_books_no_batch_cost(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str,
) -> None:  # fmt: skip
    docs = memo_uploads(3)
    limit = Decimal("5.00")
    with start_emulator(batch_delay_s=0.5, batch_end_state="EXPIRED") as expiring:
        async with running_pipeline(expiring, redis_url, key_prefix, **FAST_BATCH_POLL) as rig:
            sub = await submit_uploads(rig.client, docs, mode="batch", budget_usd=limit,
                                       services=rig.services)  # fmt: skip
            jobs = [await rig.finished(j, timeout_s=90) for j in sub.job_ids]
            status = await rig.services.budget.status(sub.batch_id, limit)
            rows = rig.calls()
        stats = expiring.stats()
    assert all(j.state == State.COMPLETE for j in jobs), [j.error for j in jobs]
    assert stats["batch"]["jobs_created"] == 1 and stats["batch"]["requests"] == 0
    assert stats["generate_requests"] == 3  # each document once, interactively
    batch_rows = [r for r in rows if r.mode == "batch"]
    assert len(batch_rows) == 3
    assert {(r.outcome, r.cost_usd) for r in batch_rows} == {("error", Decimal(0))}
    assert all("EXPIRED" in (r.error or "") for r in batch_rows)
    paid = sum((money(r.cost_usd) for r in rows), Decimal(0))
    assert abs(paid - Decimal(stats["billed_total"]["cost_usd"])) <= MICRO
    assert abs(status["batch"].spent_usd - paid) <= MICRO and status["batch"].reserved_usd == 0


async def test_a_group_the_batch_budget_refuses_is_kept_for_budget_set_to_say(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, emu: RunningEmulator,
) -> None:  # fmt: skip
    """Documents whose Gemini batch job the batch budget refuses end over_budget; `pipeline
    budget --set` must then say when the amount it took still cannot admit their group
    (tasks/control.set_budget's `short`). The refusal is kept under the member jobs the
    worker ran, not only under a job id a test hands reserve_group itself."""
    from datetime import UTC, datetime

    from pipeline.ledger.budget import Budget
    from tasks.control import set_budget
    from tasks.plan import least_call_usd

    docs = memo_uploads(4)
    async with running_pipeline(emu, redis_url, key_prefix, **FAST_BATCH_POLL) as rig:
        floor = least_call_usd(PriceTable.load(), rig.client.settings.model, datetime.now(UTC),
                               batch=True)  # fmt: skip
        low = (floor * Decimal("2.5")).quantize(Decimal("0.000000001"))  # not 4 requests
        sub = await submit_uploads(rig.client, docs, mode="batch", budget_usd=low,
                                   services=rig.services)  # fmt: skip
        jobs = [await rig.finished(j) for j in sub.job_ids]
        assert {j.state for j in jobs} == {State.OVER_BUDGET}, [j.error for j in jobs]
        assert sub.batch_id is not None
        budget = Budget(rig.client.redis, rig.client.keys, rig.client.settings)
        refused = await budget.refused(sub.batch_id, list(sub.job_ids))
        assert refused and all(usd > low for usd in refused.values()), refused
        said = await set_budget(rig.client, rig.services.recorder, rig.services.engine,
                                sub.batch_id, low)  # fmt: skip
        assert said["short"], said
        assert Decimal(said["admits_usd"]) > low, said


async def test_a_budget_lowered_while_documents_wait_bounds_their_batch_job(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, emu: RunningEmulator,
) -> None:  # fmt: skip
    """A Batch Mode document's group is reserved under the batch's budget as last set
    (`pipeline budget --set`), not the copy its job's arguments carry from the submit: the
    documents wait with no worker, the budget is lowered below what their Gemini batch job
    needs, and it is refused (over_budget, nothing paid) instead of spending past it."""
    from datetime import UTC, datetime

    from pipeline.llm.gemini import GeminiProvider
    from pipeline.queue.client import QueueClient
    from pipeline.redis.connection import connect_redis
    from pipeline.services import open_services
    from pipeline.settings import load_settings
    from tasks.control import set_budget
    from tasks.plan import least_call_usd

    docs = memo_uploads(4)
    s = load_settings(key_prefix=key_prefix, **FAST_BATCH_POLL)
    floor = least_call_usd(PriceTable.load(), s.model, datetime.now(UTC), batch=True)
    low = (floor * Decimal("2.5")).quantize(Decimal("0.000000001"))  # not 4 requests
    client = QueueClient(connect_redis(redis_url), settings=s)
    services = await open_services(client, provider=GeminiProvider(
        api_key=emu.api_key, base_url=emu.base_url))  # fmt: skip
    try:  # no worker yet: the documents wait, their arguments carrying the first budget
        sub = await submit_uploads(client, docs, mode="batch", budget_usd=low * 10,
                                   services=services)  # fmt: skip
        assert sub.batch_id is not None
        await set_budget(client, services.recorder, services.engine, sub.batch_id, low)
    finally:
        await services.aclose()
        await client.aclose()
    async with running_pipeline(emu, redis_url, key_prefix, **FAST_BATCH_POLL) as rig:
        jobs = [await rig.finished(j) for j in sub.job_ids]
        rows = rig.calls()
    assert {j.state for j in jobs} == {State.OVER_BUDGET}, [j.error for j in jobs]
    assert sum((r.cost_usd for r in rows), Decimal(0)) <= low, rows  # the bound held
    stats = emu.stats()
    assert stats["batch"]["jobs_created"] == 0 and stats["generate_requests"] == 0, stats
