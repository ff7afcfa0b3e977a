"""A settle above its reservation (an overrun) against the real budget scripts in Redis: the
whole cost is booked, every scope with a limit stops admitting calls, and only a person
raising the limit above the one in force lifts the stop."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from pipeline.errors import BudgetExceeded, InputError
from pipeline.redis.keys import Keys
from tests.ledger.conftest import make_budget

D = Decimal


async def test_an_overrun_is_booked_in_full_and_stops_the_batch(
    aredis: aioredis.Redis, keys: Keys
) -> None:
    budget = make_budget(aredis, keys)
    scopes = budget.scopes("b", D("1.00"))
    hold = await budget.reserve(scopes, D("0.10"))
    assert await budget.settle(hold, D("0.25"))  # billed above what was reserved
    status = await budget.status("b", D("1.00"))
    assert status["batch"].spent_usd == D("0.25") and status["batch"].reserved_usd == 0
    assert status["batch"].stopped and status["batch"].as_dict()["stopped"] is True
    assert not status["day"].stopped  # no day limit: nothing to protect there
    with pytest.raises(BudgetExceeded) as refused:
        await budget.reserve(budget.scopes("b", D("1.00")), D("0.01"))  # room, but stopped
    assert refused.value.stopped and refused.value.scope == "batch"
    other = await budget.reserve(budget.scopes("other", D("1.00")), D("0.01"))  # batch-only
    assert await budget.cancel(other)
    # The refusal names the command (and the API request) with an amount that lifts the
    # stop, above the limit it stopped at though the spend would fit under that: set, it
    # admits the call.
    said = str(refused.value)
    named = re.search(r"`pipeline budget b --set ([0-9.]+)`", said)
    assert named and D(named.group(1)) == D("1.000000001"), said
    assert 'PATCH /batches/b with {"budget_usd": "1.000000001"}' in said, said
    assert "raise_limit" not in said
    (batch, *_) = budget.scopes("b", D("1.00"))
    await budget.raise_limit(batch, D(named.group(1)))
    assert await budget.cancel(await budget.reserve(budget.scopes("b", D("1.00")), D("0.01")))


async def test_raising_the_limit_lifts_the_stop(aredis: aioredis.Redis, keys: Keys) -> None:
    budget = make_budget(aredis, keys)
    hold = await budget.reserve(budget.scopes("b", D("1.00")), D("0.10"))
    await budget.settle(hold, D("0.20"))
    (batch, *_) = budget.scopes("b", D("1.00"))
    with pytest.raises(InputError):
        await budget.raise_limit(batch, D("-1"))
    await budget.raise_limit(batch, D("1.00"))  # not above the limit in force: still stopped
    with pytest.raises(BudgetExceeded, match="stopped admitting"):
        await budget.reserve(budget.scopes("b", D("1.00")), D("0.01"))
    await budget.raise_limit(batch, D("1.50"))
    again = await budget.reserve(budget.scopes("b", D("1.00")), D("0.01"))  # jobs' own limit
    status = await budget.status("b")
    assert not status["batch"].stopped and status["batch"].limit_usd == D("1.50")
    assert await budget.settle(again, D("0.01"))
    assert (await budget.status("b"))["batch"].spent_usd == D("0.21")


async def test_a_day_budget_stopped_by_an_overrun_resumes_with_a_higher_setting(
    aredis: aioredis.Redis, keys: Keys
) -> None:
    budget = make_budget(aredis, keys, budget_day_usd="1.00")
    hold = await budget.reserve(budget.scopes(None, None), D("0.10"))
    await budget.settle(hold, D("0.30"))
    with pytest.raises(BudgetExceeded) as refused:
        await budget.reserve(budget.scopes(None, None), D("0.01"))
    assert refused.value.stopped and refused.value.scope == "day"
    raised = make_budget(aredis, keys, budget_day_usd="2.00")  # PIPELINE_BUDGET_DAY_USD raised
    hold = await raised.reserve(raised.scopes(None, None), D("0.01"))
    assert await raised.settle(hold, D("0.01"))


async def test_a_settle_within_the_reservation_never_stops_anything(
    aredis: aioredis.Redis, keys: Keys
) -> None:
    budget = make_budget(aredis, keys, budget_day_usd="1.00")
    for _ in range(3):
        hold = await budget.reserve(budget.scopes("b", D("1.00")), D("0.10"))
        assert await budget.settle(hold, D("0.10"))  # exactly the bound
    status = await budget.status("b", D("1.00"))
    assert not any(s.stopped for s in status.values())
    assert status["batch"].spent_usd == D("0.30")
