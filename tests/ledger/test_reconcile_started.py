"""Rows left `started` are settled by the reconciler once their job's run is over (its
record gone, not active, or active again in a later run), at their worst case, with the
budget hold of that run booked too; a row of the job's live run is left alone.

Real Redis (job hashes written as the queue writes them) and SQLite."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from pipeline.ledger.budget import Budget, CallBudget, Reservation
from pipeline.ledger.db import create_ledger_engine
from pipeline.ledger.floor import LedgerCall
from pipeline.ledger.models import JobRow, LLMCall
from pipeline.ledger.reconcile import STALE_STARTED_S, Reconciler
from pipeline.ledger.recorder import SqlRecorder
from pipeline.llm.attempts import BATCH_MODE, Outcome
from pipeline.redis.keys import Keys
from pipeline.settings import load_settings
from tests.ledger.conftest import BACKENDS, attempt, database_url_for, settle


async def test_started_rows_of_runs_that_are_over_are_abandoned_at_their_worst_case(
    tmp_path: Path, aredis: aioredis.Redis, keys: Keys
) -> None:
    engine = create_ledger_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    recorder = SqlRecorder(engine, aredis, keys)
    budget = Budget(aredis, keys, load_settings(key_prefix=keys.prefix))
    old = datetime.now(UTC) - timedelta(seconds=STALE_STARTED_S + 60)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    # j-gone: Redis has no record of it; j-done: it completed; j-again: running again now,
    # claimed after the row started; j-live: the row belongs to the run that is active now.
    await aredis.hset(keys.job("j-done"), mapping={"id": "j-done", "state": "complete"})
    await aredis.hset(
        keys.job("j-again"),
        mapping={"id": "j-again", "state": "active", "started_ms": now_ms, "token": "9"},
    )
    live_since = int((old - timedelta(seconds=30)).timestamp() * 1000)
    await aredis.hset(
        keys.job("j-live"),
        mapping={"id": "j-live", "state": "active", "started_ms": live_since, "token": "4"},
    )
    rows = {}
    for job in ("j-gone", "j-done", "j-again", "j-live"):
        call = await budget.for_call("b-rec", Decimal("5"), job_id=job, lease="1" if job !=
                                     "j-live" else "4")  # fmt: skip
        hold = await call.reserve(Decimal("0.25"))
        row = attempt(job_id=job, batch_id="b-rec", started_at=old, estimated="0.25")
        row.attempt_id = hold.token
        await recorder.started(row)
        rows[job] = row.attempt_id

    report = await Reconciler(aredis, keys, recorder, budget).run(force=True)
    assert report is not None and report.abandoned_rows == 3
    assert report.holds.abandoned == 3
    with Session(engine) as session:
        got = {r.job_id: (r.outcome, Decimal(str(r.cost_usd)))
               for r in session.scalars(select(LLMCall))}  # fmt: skip
    assert got == {
        "j-gone": ("abandoned", Decimal("0.25")),
        "j-done": ("abandoned", Decimal("0.25")),
        "j-again": ("abandoned", Decimal("0.25")),
        "j-live": ("started", Decimal("0")),
    }
    status = (await budget.status("b-rec"))["batch"]
    assert (status.spent_usd, status.reserved_usd) == (Decimal("0.75"), Decimal("0.25"))
    again = await Reconciler(aredis, keys, recorder, budget).run(force=True)
    assert again is not None and again.abandoned_rows == 0 and not again.holds
    engine.dispose()


async def test_another_prefixs_live_calls_and_jobs_are_left_alone(
    tmp_path: Path, aredis: aioredis.Redis, keys: Keys
) -> None:
    """One ledger serves every key prefix of a home (a rehearsal beside the real runs). A
    worker of the main prefix reconciles: the rehearsal's job is live in its own Redis keys,
    which the main prefix's Redis cannot see, so its running call must not be booked
    abandoned (it was, mid-call, with "a worker that is gone") nor its job marked lost."""
    engine, rehearsal_keys, main, rehearsal, budget = _two_prefixes(tmp_path, aredis, keys)
    main_keys = keys
    old = datetime.now(UTC) - timedelta(seconds=STALE_STARTED_S + 60)
    live_since = int((old - timedelta(seconds=30)).timestamp() * 1000)
    try:
        # the rehearsal's document: its job active in the rehearsal's keys, its call running
        await aredis.hset(rehearsal_keys.job("r-live"), mapping={
            "id": "r-live", "state": "active", "started_ms": live_since, "token": "4"})
        await rehearsal.upsert_job("r-live", batch_id="b-r", status="running")
        await rehearsal.started(attempt(job_id="r-live", batch_id="b-r", started_at=old))
        # and a queued one the rehearsal's Redis holds (no worker of that prefix yet)
        await aredis.hset(rehearsal_keys.job("r-queued"), mapping={
            "id": "r-queued", "state": "queued"})
        await rehearsal.upsert_job("r-queued", batch_id="b-r", status="queued")
        # the main prefix's own loose ends, which its reconciler must still close
        await main.started(attempt(job_id="m-gone", batch_id="b-m", started_at=old))
        await main.upsert_job("m-gone", batch_id="b-m", status="queued")

        report = await Reconciler(aredis, main_keys, main, budget,
                                  lost_after_s=0).run(force=True)  # fmt: skip
        assert report is not None
        assert (report.abandoned_rows, report.jobs_lost) == (1, 1), report.words()
        with Session(engine) as session:
            calls = {r.job_id: (r.outcome, r.key_prefix)
                     for r in session.scalars(select(LLMCall))}  # fmt: skip
            jobs = {j.id: (j.status, j.key_prefix) for j in session.scalars(select(JobRow))}
        assert calls == {"r-live": ("started", rehearsal_keys.prefix),
                         "m-gone": ("abandoned", main_keys.prefix)}  # fmt: skip
        assert jobs == {"r-live": ("running", rehearsal_keys.prefix),
                        "r-queued": ("queued", rehearsal_keys.prefix),
                        "m-gone": ("lost", main_keys.prefix)}  # fmt: skip
    finally:
        await aredis.delete(rehearsal_keys.job("r-live"), rehearsal_keys.job("r-queued"))
        engine.dispose()


async def test_a_budget_raised_by_another_prefixs_spend_is_not_said_to_be_lost(
    tmp_path: Path, aredis: aioredis.Redis, keys: Keys
) -> None:
    """Day and month budgets count every key prefix's calls in the shared ledger, so a
    rehearsal's spend raises the main prefix's day counter at its next pass: that is not
    spend Redis lost, and the pass must not say so (it did, as a warning, at every `run`).
    Spend of the main prefix's own that its Redis lost still is."""
    engine, rehearsal_keys, main, rehearsal, budget = _two_prefixes(tmp_path, aredis, keys)
    try:
        await _booked(main, budget, "m1", "0.10")  # counted in the main prefix's Redis too
        await main.flush()
        quiet = await Reconciler(aredis, keys, main, budget).run(force=True)
        assert quiet is not None and not quiet.budgets_raised and not quiet.budgets_shared

        await _booked(rehearsal, Budget(aredis, rehearsal_keys,
                                        load_settings(key_prefix=rehearsal_keys.prefix)),
                      "r1", "0.25")  # fmt: skip
        await rehearsal.flush()
        shared = await Reconciler(aredis, keys, main, budget).run(force=True)
        assert shared is not None and shared.budgets_shared >= 1, shared.words()
        assert shared.budgets_raised == 0 and "lost spend" not in shared.words()
        assert shared.level() < logging.WARNING
        day = (await budget.status(None))["day"]
        assert day.spent_usd == Decimal("0.35")  # both prefixes' calls, as designed

        # the main prefix's Redis loses its own day's spend: that is lost, and said so
        for k in [k async for k in aredis.scan_iter(match=keys.budget("day:*"), count=1000)]:
            if not k.endswith(":holds"):
                await aredis.hset(k, "spent", 0)
        lost = await Reconciler(aredis, keys, main, budget).run(force=True)
        assert lost is not None and lost.budgets_raised >= 1, lost.words()
        assert "lost spend" in lost.words() and lost.level() == logging.WARNING
    finally:
        for k in [k async for k in aredis.scan_iter(
            match="{" + rehearsal_keys.prefix + "}*", count=1000)]:
            await aredis.delete(k)
        engine.dispose()


async def test_a_settle_landing_during_the_pass_is_not_said_to_be_lost_spend(
    tmp_path: Path, aredis: aioredis.Redis, keys: Keys
) -> None:
    """A pass reads Redis's spend and the states of its own calls' holds; a call that
    settles between the two reads was neither in the spend read nor left out as still held,
    and looked lost. Beside a rise from another prefix's spend (shared), the pass then
    warned of lost spend though nothing was lost."""
    engine, rehearsal_keys, main, rehearsal, budget = _two_prefixes(tmp_path, aredis, keys)
    try:
        other = Budget(aredis, rehearsal_keys, load_settings(key_prefix=rehearsal_keys.prefix))
        await _booked(rehearsal, other, "r1", "0.25")
        # the main prefix's call: its ledger row settled, its budget settle on its way
        call, hold = await _booked(main, budget, "m1", "0.10", hold_settled=False)

        class SettleLands(Reconciler):
            async def _still_held(self, calls: list[LedgerCall]) -> list[LedgerCall]:
                await call.settle(hold, Decimal("0.10"))  # the settle lands now
                return await super()._still_held(calls)

        report = await SettleLands(aredis, keys, main, budget).run(force=True)
        assert report is not None and report.budgets_shared >= 1, report.words()
        assert report.budgets_raised == 0 and "lost spend" not in report.words()
        day = (await budget.status(None))["day"]
        assert day.spent_usd == Decimal("0.35")  # the settle counted once, the rest raised
    finally:
        for k in [k async for k in aredis.scan_iter(
            match="{" + rehearsal_keys.prefix + "}*", count=1000)]:
            await aredis.delete(k)
        engine.dispose()


def _two_prefixes(
    tmp_path: Path, aredis: aioredis.Redis, keys: Keys
) -> tuple[Engine, Keys, SqlRecorder, SqlRecorder, Budget]:
    """One SQLite ledger, a recorder for the test's prefix and one for a rehearsal's beside
    it, and the test prefix's budget."""
    engine = create_ledger_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    rehearsal_keys = Keys(f"{keys.prefix}-rehearsal")
    return (engine, rehearsal_keys, SqlRecorder(engine, aredis, keys),
            SqlRecorder(engine, aredis, rehearsal_keys),
            Budget(aredis, keys, load_settings(key_prefix=keys.prefix)))  # fmt: skip


async def _booked(recorder: SqlRecorder, budget: Budget, job: str, usd: str,
                  hold_settled: bool = True) -> tuple[CallBudget, Reservation]:  # fmt: skip
    """A call of `job` reserved in `budget` at `usd`, its ledger row settled at that cost
    (and flushed), its hold settled too unless `hold_settled` is False."""
    call = await budget.for_call(None, job_id=job, lease="1")
    hold = await call.reserve(Decimal(usd))
    row = attempt(job_id=job, batch_id=None, started_at=hold.at, estimated=usd)
    row.attempt_id, row.budget_at = hold.token, hold.at
    await recorder.started(row)
    await recorder.settled(settle(row, Outcome.OK, usd))
    await recorder.flush()
    if hold_settled:
        assert await call.settle(hold, Decimal(usd))
    return call, hold


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_batch_mode_request_waits_while_its_job_has_not_ended(
    backend: str, tmp_path: Path, postgres_url: str | None, aredis: aioredis.Redis, keys: Keys
) -> None:
    """A Batch Mode request's row waits in its Gemini batch job, not in a worker: the pass
    leaves it `started` (held) while its document's job is postponed between looks or looking
    again, and books it abandoned once that job ended or is gone; a lease that expires into a
    requeue (mark_abandoned keep_batch) abandons the job's interactive call, not its request."""
    with database_url_for(backend, tmp_path, postgres_url) as url:
        engine = create_ledger_engine(url)
        recorder = SqlRecorder(engine, aredis, keys)
        budget = Budget(aredis, keys, load_settings(key_prefix=keys.prefix))
        old = datetime.now(UTC) - timedelta(seconds=STALE_STARTED_S + 60)
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        jobs = {"j-postponed": {"state": "scheduled"}, "j-queued": {"state": "queued"},
                "j-looking": {"state": "active", "started_ms": now_ms, "token": "2"},
                "j-done": {"state": "complete"}}  # fmt: skip
        for job, fields in jobs.items():
            await aredis.hset(keys.job(job), mapping={"id": job, **fields})
        for job in (*jobs, "j-gone"):
            row = attempt(job_id=job, batch_id="b-wait", started_at=old, estimated="0.25")
            row.mode, row.cost_usd = BATCH_MODE, Decimal("0.25")  # its worst case, as submit
            await recorder.started(row)
        report = await Reconciler(aredis, keys, recorder, budget).run(force=True)
        assert report is not None and report.abandoned_rows == 2
        assert _outcomes(engine) == {"j-postponed": {"started"}, "j-queued": {"started"},
                                     "j-looking": {"started"}, "j-done": {"abandoned"},
                                     "j-gone": {"abandoned"}}  # fmt: skip
        mine = attempt(job_id="j-postponed", batch_id="b-wait", started_at=old)
        await recorder.started(mine)  # an interactive call of the same job, in the dead worker
        assert await recorder.mark_abandoned("j-postponed", keep_batch=True) == 1
        assert _outcomes(engine)["j-postponed"] == {"started", "abandoned"}
        assert await recorder.mark_abandoned("j-postponed") == 1  # gone dead: abandoned too
        assert _outcomes(engine)["j-postponed"] == {"abandoned"}
        engine.dispose()


def _outcomes(engine: Engine) -> dict[str, set[str]]:
    with Session(engine) as session:
        out: dict[str, set[str]] = {}
        for r in session.scalars(select(LLMCall)):
            out.setdefault(str(r.job_id), set()).add(r.outcome)
        return out
