"""A budget hold lives by the lease of the job that took it: when the sweeper recovers a dead
worker's job, the hold becomes spend at the call's worst case at once (not when it would lapse
15 minutes later), a hold whose call never went out is released, and the true cost corrects
an abandoned hold when it turns up. The budget's spend then agrees with `pipeline costs`.

Real Redis, SQLite ledger, `pipeline worker` processes, google-genai and the emulator."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy.orm import Session

from pipeline.ledger.budget import Budget
from pipeline.ledger.db import create_ledger_engine
from pipeline.ledger.lost_holds import settle_lost_holds
from pipeline.ledger.recorder import SqlRecorder
from pipeline.ledger.report import cost_report
from pipeline.llm.attempts import Outcome
from pipeline.queue import QueueClient, State
from pipeline.redis.keys import Keys
from pipeline.settings import load_settings
from tests.ledger.conftest import attempt, settle
from tests.support.emulator import start_emulator
from tests.support.paid_workers import enqueue_asks, ledger_calls, llm_env, wait_done, workers
from tests.support.waiting import eventually
from tests.support.workers import FAST, WorkerProcess

LIMIT = Decimal("5.00")


def _db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def _costs_today(database_url: str) -> Decimal:
    engine = create_ledger_engine(database_url)
    try:
        with Session(engine) as session:
            today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            return Decimal(cost_report(session, since=today, by="day")["total"]["cost_usd"])
    finally:
        engine.dispose()


@pytest.mark.slow
async def test_a_killed_workers_hold_becomes_spend_when_its_lease_is_recovered(
    aredis: aioredis.Redis, keys: Keys, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """A worker is SIGKILLed with its call on the wire (3-4 s latency). A second worker
    recovers the job (lease 4 s) and finishes it. Long before the hold's 900 s lapse: nothing
    is reserved, and the batch and day spend in Redis equal the ledger's (abandoned worst
    case + the ok call), which is what `pipeline costs` reports for today."""
    settings = load_settings(key_prefix=key_prefix, **FAST)
    client = QueueClient(aredis, keys, settings)
    budget = Budget(aredis, keys, settings)
    with start_emulator(latency_s=(3.0, 4.0)) as emu:
        env = llm_env(emu, _db(tmp_path), str(tmp_path / "home"), rpm=6000, tpm=10**9)
        a = WorkerProcess(redis_url, key_prefix, "--concurrency", "1",
                          imports=("tests.support.llm_tasks",), **env)  # fmt: skip
        try:
            (job_id,) = await enqueue_asks(client, 1, batch="b-hold", batch_limit_usd=str(LIMIT))

            async def on_the_wire() -> bool:
                held = (await budget.status("b-hold"))["batch"].reserved_usd
                return emu.stats()["generate_requests"] == 1 and held > 0

            await eventually(on_the_wire, timeout_s=120, what="A's call on the wire, held")
            a.kill()
        finally:
            a.close()
        with workers(redis_url, key_prefix, env, count=1, concurrency=2) as procs:
            (job,) = await wait_done(client, [job_id], timeout_s=180, procs=procs)
            rows = ledger_calls(_db(tmp_path))
            assert sorted(r.outcome for r in rows) == ["abandoned", "ok"]
            ledger_spend = sum((Decimal(str(r.cost_usd)).quantize(Decimal("1e-9"))
                                for r in rows), Decimal(0))  # fmt: skip

            async def booked() -> bool:
                status = await budget.status("b-hold")
                return status["batch"].spent_usd == ledger_spend

            await eventually(booked, timeout_s=60, what="the abandoned hold booked as spend")
    assert job.state == State.COMPLETE and job.lease_expiries == 1
    abandoned = next(r for r in rows if r.outcome == "abandoned")
    assert Decimal(str(abandoned.cost_usd)) > 0
    status = await budget.status("b-hold")
    assert status["batch"].reserved_usd == 0 and status["day"].reserved_usd == 0
    assert status["batch"].spent_usd == ledger_spend
    assert status["day"].spent_usd == _costs_today(_db(tmp_path)) == ledger_spend
    assert await budget.job_holds(job_id) == []


@pytest.fixture
async def recorder(tmp_path: Path, aredis: aioredis.Redis, keys: Keys) -> SqlRecorder:
    engine = create_ledger_engine(_db(tmp_path))
    return SqlRecorder(engine, aredis, keys)


async def test_a_hold_whose_call_never_went_out_is_released(
    aredis: aioredis.Redis, keys: Keys, recorder: SqlRecorder
) -> None:
    budget = Budget(aredis, keys, load_settings(key_prefix=keys.prefix))
    call = await budget.for_call("b1", LIMIT, job_id="j1", lease="7")
    await call.reserve(Decimal("0.30"))  # the worker died before writing its `started` row
    other = await budget.for_call("b1", LIMIT, job_id="j1", lease="8")
    await other.reserve(Decimal("0.20"))  # the job's next run, live: not this lease's hold
    done = await settle_lost_holds(budget, recorder, "j1", lease="7")
    assert (done.released, done.abandoned, done.booked) == (1, 0, 0)
    status = (await budget.status("b1"))["batch"]
    assert (status.spent_usd, status.reserved_usd) == (Decimal(0), Decimal("0.20"))
    assert [h.lease for h in await budget.job_holds("j1")] == ["8"]


async def test_abandoned_hold_books_the_worst_case_and_the_true_cost_corrects_it(
    aredis: aioredis.Redis, keys: Keys, recorder: SqlRecorder
) -> None:
    """The worker was only cut off (its lease expired, its call went on): the recovery books
    the worst case at once; when the call settles after all, spend becomes the true cost."""
    budget = Budget(aredis, keys, load_settings(key_prefix=keys.prefix))
    call = await budget.for_call("b2", LIMIT, job_id="j2", lease="3")
    hold = await call.reserve(Decimal("0.40"))
    row = attempt(job_id="j2", batch_id="b2", estimated="0.40")
    row.attempt_id = hold.token
    await recorder.started(row)
    assert await recorder.mark_abandoned("j2") == 1
    done = await settle_lost_holds(budget, recorder, "j2", lease="3")
    assert done.abandoned == 1
    status = (await budget.status("b2"))["batch"]
    assert (status.spent_usd, status.reserved_usd) == (Decimal("0.40"), Decimal(0))
    assert await call.settle(hold, Decimal("0.05")) is True  # the true cost turned up
    assert (await budget.status("b2"))["batch"].spent_usd == Decimal("0.05")
    assert await call.settle(hold, Decimal("0.05")) is False  # once only


async def test_a_settled_call_whose_worker_lost_redis_is_booked_at_its_cost(
    aredis: aioredis.Redis, keys: Keys, recorder: SqlRecorder
) -> None:
    """The answer was paid and recorded `ok`, but the budget settle never reached Redis:
    recovery books the row's real cost, not the worst case and not $0."""
    budget = Budget(aredis, keys, load_settings(key_prefix=keys.prefix))
    call = await budget.for_call("b3", LIMIT, job_id="j3", lease="1")
    hold = await call.reserve(Decimal("0.40"))
    row = attempt(job_id="j3", batch_id="b3", estimated="0.40")
    row.attempt_id = hold.token
    await recorder.started(row)
    await recorder.settled(settle(row, Outcome.OK, "0.012", input_tokens=10, output_tokens=5))
    done = await settle_lost_holds(budget, recorder, "j3", lease="1")
    assert done.booked == 1
    status = (await budget.status("b3"))["batch"]
    assert (status.spent_usd, status.reserved_usd) == (Decimal("0.012"), Decimal(0))
