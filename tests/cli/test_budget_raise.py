"""`pipeline budget BATCH --set` and `pipeline status` for a batch an overrun stopped: the
real CLI in a subprocess against a real Redis and SQLite ledger."""

from __future__ import annotations

import json
from decimal import Decimal

import redis

from pipeline.ledger.budget import Budget
from pipeline.ledger.db import get_engine
from pipeline.ledger.recorder import SqlRecorder
from pipeline.redis.connection import connect_redis
from pipeline.redis.keys import Keys
from pipeline.settings import load_settings
from tests.support.cli import run_cli


async def test_raising_a_stopped_batch_budget_lifts_the_stop_only_above_the_old_limit(
    pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis
) -> None:
    prefix = pipeline_env["PIPELINE_KEY_PREFIX"]
    client = connect_redis(redis_url)
    settings = load_settings(key_prefix=prefix)
    budget = Budget(client, Keys(prefix), settings)
    engine = get_engine(settings)
    await SqlRecorder(engine, client, Keys(prefix)).upsert_batch("b1", budget_usd=Decimal("1.00"))
    engine.dispose()
    try:
        hold = await budget.reserve(budget.scopes("b1", Decimal("1.00")), Decimal("0.10"))
        await budget.settle(hold, Decimal("0.40"))  # an overrun: the batch stops
        before = json.loads(run_cli(pipeline_env, "status", "--json").stdout)
        same = run_cli(pipeline_env, "budget", "b1", "--set", "1.00")
        higher = run_cli(pipeline_env, "budget", "b1", "--set", "$2.50")
        bad = run_cli(pipeline_env, "budget", "b1", "--set", "lots")
        status = (await budget.status("b1"))["batch"]
        admitted = await budget.reserve(budget.scopes("b1", Decimal("1.00")), Decimal("0.10"))
        await budget.cancel(admitted)
    finally:
        await client.aclose()
    assert "budget" in before  # the overview reads budgets without a batch
    assert same.returncode == 0, same.stderr
    assert "still stopped" in same.stdout and "$1.000000000" in same.stdout
    assert higher.returncode == 0, higher.stderr
    assert "stop after an overrun is lifted" in higher.stdout
    assert status.limit_usd == Decimal("2.5") and not status.stopped
    assert bad.returncode != 0 and "not an amount" in bad.stderr
    batch = json.loads(run_cli(pipeline_env, "status", "b1", "--json").stdout)
    assert batch["budget_usd"] == "2.500000000"  # the ledger knows the new limit
