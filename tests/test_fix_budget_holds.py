"""Budget holds in a real Redis: refusals that only holds cause are told apart from real
overspend, and a running call's hold is extended instead of lapsing under it."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from pipeline.errors import BudgetExceeded
from pipeline.ledger.budget import Budget
from pipeline.redis.keys import Keys
from tests.ledger_helpers import make_budget


def _budget(aredis: aioredis.Redis, keys: Keys, hold_s: float = 900.0, **limits: str) -> Budget:
    return make_budget(aredis, keys, hold_s, **limits)  # type: ignore[no-any-return]


async def test_holds_alone_are_held_only_and_settled_spend_is_not(
    aredis: aioredis.Redis, keys: Keys
) -> None:
    budget = _budget(aredis, keys)
    call = await budget.for_call("b", Decimal("1.00"))
    hold = await call.reserve(Decimal("0.90"))
    with pytest.raises(BudgetExceeded) as info:
        await call.reserve(Decimal("0.50"))  # 0 spent + 0.50 fits; the 0.90 hold does not
    assert (info.value.scope, info.value.held_only) == ("batch", True)
    assert "held by running calls" in str(info.value)

    await call.settle(hold, Decimal("0.60"))  # the call cost less than its worst case
    with pytest.raises(BudgetExceeded) as info:
        await call.reserve(Decimal("0.50"))  # 0.60 spent + 0.50 > 1.00 whatever settles
    assert (info.value.scope, info.value.held_only) == ("batch", False)
    assert "pipeline budget BATCH --set" in str(info.value)
    assert (await call.reserve(Decimal("0.40"))).amount_usd == Decimal("0.40")


async def test_a_scope_that_can_never_fit_wins_over_one_blocked_by_holds(
    aredis: aioredis.Redis, keys: Keys
) -> None:
    """The batch is blocked only by a hold, but the day budget is spent: waiting a few
    seconds for the batch hold would not help, so the day's refusal is the one reported."""
    budget = _budget(aredis, keys, budget_day_usd="1.00")
    other = await budget.for_call("other", None)
    await other.settle(await other.reserve(Decimal("0.80")), Decimal("0.80"))
    call = await budget.for_call("b", Decimal("0.50"))
    await call.reserve(Decimal("0.15"))
    with pytest.raises(BudgetExceeded) as info:
        await call.reserve(Decimal("0.40"))
    assert (info.value.scope, info.value.held_only) == ("day", False)
    assert "PIPELINE_BUDGET_DAY_USD" in str(info.value)


async def test_extend_keeps_a_running_calls_hold_past_hold_s(
    aredis: aioredis.Redis, keys: Keys
) -> None:
    budget = _budget(aredis, keys, hold_s=0.5)
    call = await budget.for_call("b", Decimal("1"))
    assert call.hold_s == 0.5
    token = await call.reserve(Decimal("0.7"))
    loop = asyncio.get_running_loop()
    until = loop.time() + 4 * call.hold_s
    while loop.time() < until:  # a call running for four hold lifetimes, renewing
        assert await call.extend(token) is True
        assert (await budget.status("b"))["batch"].reserved_usd == Decimal("0.7")
        await asyncio.sleep(call.hold_s / 4)
    assert await call.settle(token, Decimal("0.2")) is True
    assert await call.extend(token) is False  # closed: nothing to extend
    status = (await budget.status("b"))["batch"]
    assert (status.spent_usd, status.reserved_usd) == (Decimal("0.2"), Decimal(0))


async def test_a_lapsed_hold_is_not_brought_back_by_extend(
    aredis: aioredis.Redis, keys: Keys
) -> None:
    budget = _budget(aredis, keys, hold_s=0.2)
    call = await budget.for_call("b", Decimal("1"))
    token = await call.reserve(Decimal("1"))
    deadline = asyncio.get_running_loop().time() + 10
    while (await budget.status("b"))["batch"].reserved_usd != 0:
        assert asyncio.get_running_loop().time() < deadline, "hold never lapsed"
        await asyncio.sleep(0.05)
    assert await call.extend(token) is False
    assert (await budget.status("b"))["batch"].reserved_usd == 0
    await call.settle(token, Decimal("0.3"))  # the call did happen: still booked
    assert (await budget.status("b"))["batch"].spent_usd == Decimal("0.3")
