"""A long Redis outage (longer than the workers' own Redis retries and the jobs' leases) with
calls on the wire: the answers that arrive meanwhile are kept in the SQL ledger, so when
Redis is back and the jobs run again they are answered from there, not paid again; every
bill is one `ok` row, nothing is left `started`, and the budget agrees with the ledger.

Real private redis-server (AOF on, SIGKILLed and restarted), SQLite ledger, two `pipeline
worker` processes, google-genai and the emulator."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path

import pytest

from pipeline.ledger.budget import Budget
from pipeline.queue import JobOptions, QueueClient, State
from pipeline.redis.connection import connect_redis
from pipeline.redis.keys import Keys
from pipeline.settings import load_settings
from tests.support.emulator import RunningEmulator, start_emulator
from tests.support.llm_tasks import MODEL, ask
from tests.support.paid_workers import ledger_calls, llm_env, wait_done, workers
from tests.support.private_redis import PrivateRedis
from tests.support.waiting import eventually
from tests.support.workers import FAST

pytestmark = pytest.mark.slow
NANO = Decimal("1e-9")
# Longer than a worker's Redis retries (~30 s of back-off) and than a job's lease (20 s).
OUTAGE_S = 40.0
JOBS = 12


def _in_flight(emu: RunningEmulator) -> int:
    stats = emu.stats()
    answered = sum(int(row["requests"]) for row in stats["billed"].values())
    return int(stats["generate_requests"]) - answered


@pytest.mark.xfail(
    strict=False,
    reason="open bug found at integration (issue 11): after the merges of this round the Redis "
    "budget's batch spend ends above the ledger's (0.0011576 vs 0.0009272 in one run) while "
    "every other invariant here holds (no repeat, nothing started or abandoned)",
)
async def test_answers_arriving_during_a_redis_outage_are_not_paid_again(
    tmp_path: Path, key_prefix: str
) -> None:
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    home = str(tmp_path / "home")
    server = PrivateRedis(tmp_path / "redis", appendonly=True)
    server.start()
    redis = connect_redis(server.url)
    try:
        keys = Keys(key_prefix)
        settings = load_settings(key_prefix=key_prefix, database_url=db, home=home, **FAST)
        client = QueueClient(redis, keys, settings)
        with start_emulator(latency_s=(2.0, 3.0)) as emu:
            env = llm_env(emu, db, home, rpm=6000, tpm=10**9, reconcile_interval_s=5)
            with workers(server.url, key_prefix, env, count=2, concurrency=4) as procs:
                ids = [
                    (await client.enqueue(ask, f"q {i}: one line on plan {i}", _options=JobOptions(
                        batch="b-outage", hints={"model": MODEL, "tokens": 20},
                        # a 20 s lease: long enough that no lease lapses once Redis is back
                        # (a busy machine), short enough to lapse during the outage
                        expected_duration_s=10.0,
                    ))).id
                    for i in range(JOBS)
                ]  # fmt: skip

                async def calls_on_the_wire() -> bool:
                    return _in_flight(emu) >= 3

                await eventually(calls_on_the_wire, timeout_s=60, what="calls on the wire")
                server.kill()
                down_until = time.monotonic() + OUTAGE_S
                await asyncio.sleep(OUTAGE_S)
                assert time.monotonic() >= down_until
                server.start()  # the AOF brings the queue back
                jobs = await wait_done(client, ids, timeout_s=180, procs=procs)
                stats = emu.stats()

                async def nothing_started() -> bool:
                    return not [c for c in ledger_calls(db) if c.outcome == "started"]

                await eventually(nothing_started, timeout_s=60, what="no row left started")
                budget = Budget(redis, keys, settings)

                async def budget_settled() -> bool:
                    return (await budget.status("b-outage"))["batch"].reserved_usd == 0

                await eventually(budget_settled, timeout_s=60, what="every hold closed")
                booked = (await budget.status("b-outage"))["batch"].spent_usd
    finally:
        await redis.aclose()
        server.kill()

    assert all(j.state == State.COMPLETE for j in jobs), [j.state for j in jobs]
    calls = ledger_calls(db)
    ok = [c for c in calls if c.outcome == "ok"]
    billed = sum(row["requests"] for row in stats["billed"].values())
    assert stats["billed_repeats"] == 0, stats  # no answer was paid for twice
    assert len(ok) == billed == stats["generate_requests"] == JOBS
    assert len({c.call_key for c in ok}) == JOBS
    reused = [c for c in calls if c.outcome == "from_store"]
    assert reused, "no answer was kept across the outage: the test did not hit the fault"
    billed_tokens = sum(row["input_tokens"] for row in stats["billed"].values())
    assert sum(c.input_tokens for c in ok) == billed_tokens
    assert not [c for c in calls if c.outcome == "abandoned"]  # every answer was kept
    spent = sum((Decimal(str(c.cost_usd)).quantize(NANO) for c in calls), Decimal(0))
    assert booked == spent > 0
