"""`pipeline budget raise` and `pipeline status` for a batch an overrun stopped: the real CLI
in a subprocess against a real Redis and SQLite ledger."""

from __future__ import annotations

import json
from decimal import Decimal

import redis

from pipeline.ledger.budget import Budget
from pipeline.redis.connection import connect_redis
from pipeline.redis.keys import Keys
from pipeline.settings import load_settings
from tests.support.cli import run_cli


async def test_raising_a_stopped_batch_budget_lifts_the_stop_only_above_the_old_limit(
    pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis
) -> None:
    prefix = pipeline_env["PIPELINE_KEY_PREFIX"]
    client = connect_redis(redis_url)
    budget = Budget(client, Keys(prefix), load_settings(key_prefix=prefix))
    try:
        hold = await budget.reserve(budget.scopes("b1", Decimal("1.00")), Decimal("0.10"))
        await budget.settle(hold, Decimal("0.40"))  # an overrun: the batch stops
        before = json.loads(run_cli(pipeline_env, "status", "--json").stdout)
        same = run_cli(pipeline_env, "budget", "raise", "b1", "1.00")
        higher = run_cli(pipeline_env, "budget", "raise", "b1", "$2.50")
        bad = run_cli(pipeline_env, "budget", "raise", "b1", "lots")
        status = (await budget.status("b1"))["batch"]
        admitted = await budget.reserve(budget.scopes("b1", Decimal("1.00")), Decimal("0.10"))
        await budget.cancel(admitted)
    finally:
        await client.aclose()
    assert "budget" in before  # the overview reads budgets without a batch
    assert same.returncode == 0, same.stderr
    assert "still stopped" in same.stdout and "1.000000000" in same.stdout
    assert higher.returncode == 0, higher.stderr
    assert "stop after an overrun is lifted" in higher.stdout
    assert status.limit_usd == Decimal("2.5") and not status.stopped
    assert bad.returncode != 0 and "not an amount" in bad.stderr
    batch = json.loads(run_cli(pipeline_env, "status", "b1", "--json").stdout)
    assert batch["budget_usd"] == "2.500000000"  # the ledger knows the new limit
