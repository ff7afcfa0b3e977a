"""Budgets reserved in a real Redis: concurrency, scopes, settle/cancel, lapsed holds; and
holds: refusals that only holds cause are told apart from real overspend, and a running
call's hold is extended instead of lapsing under it."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from pipeline.errors import BudgetExceeded
from pipeline.ledger.budget import from_nanos, to_nanos
from pipeline.redis.keys import Keys
from tests.ledger.conftest import make_budget


async def test_concurrent_reservations_never_pass_the_budget(
    aredis: aioredis.Redis, keys: Keys
) -> None:
    budget = make_budget(aredis, keys)
    call = await budget.for_call("batch-race", Decimal("3.00"))
    worst = Decimal("0.1")  # 30 fit in 3.00

    async def one() -> object:
        try:
            return await call.reserve(worst)
        except BudgetExceeded as exc:
            return exc

    outcomes = await asyncio.gather(*(one() for _ in range(100)))
    granted = [o for o in outcomes if not isinstance(o, BudgetExceeded)]
    refused = [o for o in outcomes if isinstance(o, BudgetExceeded)]
    assert len(granted) == 30 and len(refused) == 70
    assert {e.scope for e in refused} == {"batch"}
    status = await budget.status("batch-race", Decimal("3.00"))
    assert status["batch"].reserved_usd == Decimal("3.00")

    actual = Decimal("0.073000001")
    settled = await asyncio.gather(*(call.settle(t, actual) for t in granted))  # type: ignore[arg-type]
    assert all(settled)
    status = await budget.status("batch-race", Decimal("3.00"))
    assert status["batch"].reserved_usd == 0
    assert status["batch"].spent_usd == actual * 30
    assert status["batch"].spent_usd <= Decimal("3.00")
    assert status["day"].spent_usd == actual * 30  # day and month count every batch
    assert status["month"].spent_usd == actual * 30


async def test_day_budget_refuses_with_scope_and_advice(aredis: aioredis.Redis, keys: Keys) -> None:
    budget = make_budget(aredis, keys, budget_day_usd="1.00", budget_month_usd="100")
    call = await budget.for_call("b", None)
    token = await call.reserve(Decimal("0.60"))
    with pytest.raises(BudgetExceeded) as info:
        await call.reserve(Decimal("0.50"))
    assert info.value.scope == "day"
    assert info.value.held_only  # only the 0.60 hold is in the way: worth waiting for
    # all or nothing: the refused reservation held nothing in the batch or month either
    status = await budget.status("b")
    assert status["batch"].reserved_usd == Decimal("0.60")
    assert status["month"].reserved_usd == Decimal("0.60")

    assert await call.cancel(token) is True
    assert await call.settle(token, Decimal("0.60")) is False  # closed tokens stay closed
    status = await budget.status("b")
    assert (status["day"].spent_usd, status["day"].reserved_usd) == (0, 0)
    full = await call.reserve(Decimal("1.00"))  # the cancelled hold came back
    await call.settle(full, Decimal("0.70"))
    with pytest.raises(BudgetExceeded) as info:  # settled spend alone leaves no room
        await call.reserve(Decimal("0.50"))
    assert (info.value.scope, info.value.held_only) == ("day", False)
    assert "PIPELINE_BUDGET_DAY_USD" in str(info.value)


async def test_month_budget_applies_across_batches(aredis: aioredis.Redis, keys: Keys) -> None:
    budget = make_budget(aredis, keys, budget_month_usd="0.5")
    first = await (await budget.for_call("b1")).reserve(Decimal("0.4"))
    await budget.settle(first, Decimal("0.45"))
    with pytest.raises(BudgetExceeded) as info:
        await (await budget.for_call("b2")).reserve(Decimal("0.1"))
    assert info.value.scope == "month"


async def test_settle_is_counted_once(aredis: aioredis.Redis, keys: Keys) -> None:
    budget = make_budget(aredis, keys)
    call = await budget.for_call("b", Decimal("1"))
    token = await call.reserve(Decimal("0.5"))
    assert await call.settle(token, Decimal("0.2")) is True
    assert await call.settle(token, Decimal("0.2")) is False
    status = await budget.status("b")  # the limit is remembered from the reservation
    assert status["batch"].spent_usd == Decimal("0.2")
    assert status["batch"].limit_usd == Decimal("1")
    assert status["day"].limit_usd is None


async def test_a_dead_workers_hold_lapses(aredis: aioredis.Redis, keys: Keys) -> None:
    budget = make_budget(aredis, keys, hold_s=0.2)
    call = await budget.for_call("b", Decimal("1"))
    await call.reserve(Decimal("1"))  # never settled: the worker "died"
    with pytest.raises(BudgetExceeded):
        await call.reserve(Decimal("0.5"))
    deadline = asyncio.get_running_loop().time() + 10
    while (await budget.status("b", Decimal("1")))["batch"].reserved_usd != 0:
        assert asyncio.get_running_loop().time() < deadline, "hold never lapsed"
        await asyncio.sleep(0.05)
    late = await call.reserve(Decimal("0.5"))
    assert late.amount_usd == Decimal("0.5")


def test_nano_dollar_conversion() -> None:
    assert to_nanos(Decimal("0.000000001")) == 1
    assert to_nanos(Decimal("0.0000000001"), round_up=True) == 1  # reservations round up
    assert from_nanos("1234567890") == Decimal("1.23456789")
    with pytest.raises(ValueError):
        to_nanos(Decimal("-1"))


# -- holds: told apart from spend, extended while the call runs ------------------------------


async def test_holds_alone_are_held_only_and_settled_spend_is_not(
    aredis: aioredis.Redis, keys: Keys
) -> None:
    budget = make_budget(aredis, keys)
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
    assert "`pipeline budget b --set 1.100000000`" in str(info.value)  # what admits it
    assert (await call.reserve(Decimal("0.40"))).amount_usd == Decimal("0.40")


async def test_a_scope_that_can_never_fit_wins_over_one_blocked_by_holds(
    aredis: aioredis.Redis, keys: Keys
) -> None:
    """The batch is blocked only by a hold, but the day budget is spent: waiting a few
    seconds for the batch hold would not help, so the day's refusal is the one reported."""
    budget = make_budget(aredis, keys, budget_day_usd="1.00")
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
    budget = make_budget(aredis, keys, hold_s=0.5)
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
    budget = make_budget(aredis, keys, hold_s=0.2)
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
