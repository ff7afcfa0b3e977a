"""A call reserved a moment before midnight UTC counts in one day: the day its reservation
chose, in the budget, in the ledger's row and in the reconciler's floor.

The fault this pins down (a reviewer's finding): the reservation chose its day and month
from the clock, and the ledger row's `started_at` was read from it just after, so a call
reserved at 23:59:59.9 had its row in the next day. A floor pass before the call's settle
then found the call's hold missing from the next day's scope and took it for lapsed: it
booked the call in the next day and marked its token settled, so the worker's real settle
was refused and the reservation's own day was left with an open hold and no spend until
the hold lapsed (the day under-counted). A floor must not mark settled a call whose hold
is open in any scope, and the row must count in the reservation's day.

Real Redis and the real budget scripts; the ledger on SQLite and PostgreSQL. The day is
forced, not waited for: the reservation is taken for yesterday 23:59:59.9 and the row is
stamped today 00:00:00.1, as the caller stamps it (it reads its clock after reserving).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import redis.asyncio as aioredis

from pipeline.ledger.budget import Budget, Scope, day_month_scopes
from pipeline.ledger.reconcile import Reconciler
from pipeline.ledger.recorder import SqlRecorder
from pipeline.llm.attempts import MemoryRecorder, Outcome
from pipeline.llm.caller import LLMCaller
from pipeline.llm.callstore import CallStore
from pipeline.llm.limiter import Limiter
from pipeline.llm.pricing import PriceTable
from pipeline.llm.provider import LLMRequest, LLMResponse, Part, Usage
from pipeline.llm.retry import RetryPolicy
from pipeline.redis.connection import text
from pipeline.redis.keys import Keys
from pipeline.settings import load_settings
from tests.ledger.conftest import attempt, make_budget, settle
from tests.support.scripted import ScriptedProvider

LIMIT = Decimal("5.00")
WORST = Decimal("0.40")
COST = Decimal("0.012")
MODEL = "gemini-3.5-flash-lite"  # priced in config/pricing.toml


def _midnight() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


async def _spent(budget: Budget, scope: Scope) -> tuple[Decimal, Decimal]:
    """(spent, reserved) of one scope, whatever day it is."""
    totals, _ = scope.keys(budget.keys)
    raw = await budget.redis.hmget(totals, ["spent", "reserved"])
    return tuple(Decimal(int(v or 0)) / Decimal(10**9) for v in raw)  # type: ignore[return-value]


async def test_a_call_reserved_before_midnight_counts_in_its_reservations_day(
    aredis: aioredis.Redis, keys: Keys, recorder: SqlRecorder
) -> None:
    budget = make_budget(aredis, keys, budget_day_usd="10", budget_month_usd="100")
    reserved_at = _midnight() - timedelta(milliseconds=100)  # yesterday, 23:59:59.9
    call = await budget.for_call("b-midnight", LIMIT, job_id="j-mid", lease="1")
    hold = await call.reserve(WORST, at=reserved_at)
    batch, yesterday, month = hold.scopes
    assert yesterday.name == f"day:{reserved_at:%Y-%m-%d}"
    today = Scope("day", f"day:{_midnight():%Y-%m-%d}", None)
    # The caller's clock is read after the reservation: the row starts in the next day.
    row = attempt(job_id="j-mid", batch_id="b-midnight", estimated=str(WORST),
                  started_at=_midnight() + timedelta(milliseconds=100))  # fmt: skip
    row.attempt_id = hold.token
    row.budget_at = hold.at
    await recorder.started(row)
    # The answer is in the ledger before the budget hears of it (caller.py settles the row
    # first); a floor pass runs in between.
    await recorder.settled(settle(row, Outcome.OK, str(COST), input_tokens=10, output_tokens=5))
    reconciler = Reconciler(aredis, keys, recorder, budget)
    await reconciler.rebuild_budgets()
    assert text(await aredis.get(budget.state_key(hold.token)) or "") == "held", "the hold is open"
    assert await call.settle(hold, COST) is True, "the worker's settle books the call"
    await reconciler.rebuild_budgets()  # after the settle: nothing more to raise
    assert await _spent(budget, yesterday) == (COST, Decimal(0))
    assert await _spent(budget, today) == (Decimal(0), Decimal(0))  # not counted twice
    if month.name == f"month:{_midnight():%Y-%m}":  # today is not the 1st: floored too
        assert await _spent(budget, month) == (COST, Decimal(0))
    assert await _spent(budget, batch) == (COST, Decimal(0))


async def test_a_floor_leaves_a_hold_open_in_any_scope_to_its_settle(
    aredis: aioredis.Redis, keys: Keys, recorder: SqlRecorder
) -> None:
    """A row that does not say its hold's day (written before llm_calls.budget_at) names a
    day scope the hold is not in; the hold is still open in the call's batch and month
    scopes, so the floor counts it 0 and leaves it held: the worker's settle books it in
    the reservation's day, and that day is not left short."""
    budget = make_budget(aredis, keys, budget_day_usd="10", budget_month_usd="100")
    reserved_at = _midnight() - timedelta(milliseconds=100)
    call = await budget.for_call("b-legacy", LIMIT, job_id="j-legacy", lease="1")
    hold = await call.reserve(WORST, at=reserved_at)
    _, yesterday, _ = hold.scopes
    row = attempt(job_id="j-legacy", batch_id="b-legacy", estimated=str(WORST),
                  started_at=_midnight() + timedelta(milliseconds=100))  # fmt: skip
    row.attempt_id = hold.token  # and no budget_at
    await recorder.started(row)
    await recorder.settled(settle(row, Outcome.OK, str(COST), input_tokens=10, output_tokens=5))
    await Reconciler(aredis, keys, recorder, budget).rebuild_budgets()
    assert text(await aredis.get(budget.state_key(hold.token)) or "") == "held"
    assert await call.settle(hold, COST) is True
    assert await _spent(budget, yesterday) == (COST, Decimal(0))


async def test_the_callers_row_carries_its_reservations_moment(
    aredis: aioredis.Redis, keys: Keys
) -> None:
    """The caller reads its clock after reserving: with that clock past midnight, the row's
    started_at is in the next day, and its budget_at is still the reservation's, whose day
    holds the call's cost."""
    recorder = MemoryRecorder()
    provider = ScriptedProvider(recorder, LLMResponse(
        text="fine", usage=Usage(input_tokens=100, output_tokens=40),
        model_version=MODEL + "-001", latency_s=0.01))  # fmt: skip
    settings = load_settings(rpm=6000, tpm=10_000_000)
    budget = Budget(aredis, keys, settings)
    tomorrow = _midnight() + timedelta(days=1, milliseconds=100)
    caller = LLMCaller(provider, Limiter(aredis, keys, settings), CallStore(aredis, keys, ttl_s=60),
                       recorder, PriceTable.load(), policy=RetryPolicy(max_attempts=1),
                       clock=lambda: tomorrow)  # fmt: skip
    request = LLMRequest(model=MODEL, parts=(Part(text="summarise"),), prompt_version="p1",
                         max_output_tokens=256)  # fmt: skip
    before = datetime.now(UTC)
    await caller.call(request, budget=await budget.for_call("b-caller", LIMIT))
    (row,) = recorder.calls.values()
    assert row.started_at == tomorrow
    assert row.budget_at is not None and before <= row.budget_at <= datetime.now(UTC)
    today = Scope("day", day_month_scopes(row.budget_at)[0], None)
    assert await _spent(budget, today) == (row.cost_usd, Decimal(0)) and row.cost_usd > 0
