"""The ledger against the provider's own bill, with real worker processes, google-genai and
the emulator over HTTP: tokens and dollars in the ledger equal what the emulator billed,
a batch budget is never overspent, and a call cut off by SIGKILL ends `abandoned`."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from pipeline.ledger.budget import Budget
from pipeline.ledger.db import create_ledger_engine
from pipeline.ledger.report import cost_report
from pipeline.llm.pricing import PriceTable
from pipeline.llm.provider import Usage
from pipeline.queue import QueueClient, State
from tests.support.emulator import RunningEmulator, start_emulator
from tests.support.llm_tasks import MODEL
from tests.support.paid_workers import enqueue_asks, ledger_calls, llm_env, wait_done, workers
from tests.support.waiting import eventually
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.slow


def _db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def _env(emu: RunningEmulator, tmp_path: Path) -> dict[str, str]:
    return llm_env(emu, _db(tmp_path), str(tmp_path / "home"), rpm=6000, tpm=10**9, rpd=10**6)


def _billed_cost(billed: dict[str, dict[str, int]], at: datetime) -> Decimal:
    prices = PriceTable.load()
    return sum(
        (
            prices.cost(
                version,
                Usage(row["input_tokens"], row["output_tokens"], row["thinking_tokens"]),
                at,
            )
            for version, row in billed.items()
        ),
        Decimal(0),
    )


def _report(database_url: str) -> dict:  # type: ignore[type-arg]
    engine = create_ledger_engine(database_url)
    try:
        with Session(engine) as session:
            return cost_report(session, by="status")
    finally:
        engine.dispose()


async def test_ledger_equals_what_the_provider_billed(
    client: QueueClient, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """40 jobs, 2 worker processes, ~15 % of answers a 503: the ledger's tokens and cost
    (the `pipeline costs --format json` total) equal the emulator's bill priced with the
    price table, and the failed attempts are in the ledger at $0."""
    with start_emulator(fail_rate=0.15, fail_codes=(503,), seed=7) as emu:
        with workers(redis_url, key_prefix, _env(emu, tmp_path), count=2) as procs:
            ids = await enqueue_asks(client, 40, batch="b-ledger")
            jobs = await wait_done(client, ids, timeout_s=60, procs=procs)
        stats = emu.stats()
    assert all(j.state == State.COMPLETE for j in jobs)
    billed = stats["billed"]
    assert sum(row["requests"] for row in billed.values()) == 40
    assert stats["by_status"].get("503", 0) > 0, "the test needs some injected 503s"

    total = _report(_db(tmp_path))["total"]
    for name in ("input_tokens", "output_tokens", "thinking_tokens"):
        assert total[name] == sum(row[name] for row in billed.values()), name
    assert Decimal(total["cost_usd"]) == _billed_cost(billed, datetime.now(UTC))
    assert Decimal(total["cost_usd"]) > 0

    calls = ledger_calls(_db(tmp_path))
    failed = [c for c in calls if c.outcome in ("error", "rate_limited")]
    assert len(failed) == stats["by_status"]["503"]
    assert all(Decimal(str(c.cost_usd)) == 0 for c in failed)
    assert sum(c.outcome == "ok" for c in calls) == 40
    assert not [c for c in calls if c.outcome == "started"]


async def test_batch_budget_is_never_overspent(
    client: QueueClient, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """100 jobs and a batch budget that covers about 30 calls' worst case: spend stays within
    it, the other jobs end over_budget, and the emulator billed exactly the completed ones."""
    prices = PriceTable.load()
    worst = prices.worst_case_cost(MODEL, 50, 64, datetime.now(UTC))
    limit = worst * 30
    with start_emulator() as emu:
        with workers(redis_url, key_prefix, _env(emu, tmp_path), count=2) as procs:
            ids = await enqueue_asks(
                client, 100, batch="b-budget", tokens=50, batch_limit_usd=str(limit)
            )
            jobs = await wait_done(client, ids, timeout_s=60, procs=procs)
        stats = emu.stats()
    states = [j.state for j in jobs]
    done, over = states.count(State.COMPLETE), states.count(State.OVER_BUDGET)
    assert done + over == 100 and done >= 30 and over > 0, states
    billed = sum(row["requests"] for row in stats["billed"].values())
    assert billed == done == stats["generate_requests"]

    spent = Decimal(_report(_db(tmp_path))["total"]["cost_usd"])
    assert 0 < spent <= limit
    assert spent == _billed_cost(stats["billed"], datetime.now(UTC))
    status = await Budget(client.redis, client.keys, client.settings).status("b-budget")
    assert status["batch"].spent_usd == spent and status["batch"].reserved_usd == 0


async def test_sigkill_mid_call_leaves_an_abandoned_row_and_one_repeat(
    client: QueueClient, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """A worker is SIGKILLed while its call is on the wire (3-4 s latency). After the lease
    expires the started row becomes `abandoned`, a second worker finishes the job, and the
    emulator saw the same request exactly twice (one repeat)."""
    with start_emulator(latency_s=(3.0, 4.0)) as emu:
        env = _env(emu, tmp_path)
        a = WorkerProcess(redis_url, key_prefix, "--concurrency", "1",
                          imports=("tests.support.llm_tasks",), **env)  # fmt: skip
        try:
            (job_id,) = await enqueue_asks(client, 1, batch="b-kill")

            async def on_the_wire() -> bool:
                rows = ledger_calls(_db(tmp_path))
                return emu.stats()["generate_requests"] == 1 and len(rows) == 1

            await eventually(on_the_wire, timeout_s=30, what="A's call on the wire")
            a.kill()
        finally:
            a.close()
        with workers(redis_url, key_prefix, env, count=1, concurrency=4) as procs:
            (job,) = await wait_done(client, [job_id], timeout_s=60, procs=procs)
        stats = emu.stats()
    assert job.state == State.COMPLETE and job.attempt == 2 and job.lease_expiries == 1
    rows = ledger_calls(_db(tmp_path))
    assert sorted(r.outcome for r in rows) == ["abandoned", "ok"]
    abandoned = next(r for r in rows if r.outcome == "abandoned")
    assert abandoned.finished_at is not None and Decimal(str(abandoned.cost_usd)) > 0
    assert stats["generate_requests"] == 2 and stats["repeats"] == 1
