"""A call's cost reaches a budget's spend once: by its hold's close, or by the reconciler's
floor (the ledger's spend, raised into Redis), never by both.

The fault this pins down (issue 11, "a Redis outage pays twice"): an answer arrives while
Redis is away, its ledger row is settled `ok`, but its hold stays open in Redis. When Redis
is back, the reconciler raised the budget's spend to the ledger's sum, which already held
that cost, and then the hold was settled too (by the worker's retried settle, or by the
sweeper's recovery of the job): the cost was booked twice. The same happened to every
Batch Mode request whose ledger row (written at its worst case before `batches.create`)
met a reconcile pass while its hold was open, and to a call settled after Redis lost its
data, or after its hold lapsed, once the floor had counted it.

Real Redis; the ledger on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import Engine, event

from pipeline.ledger import writes
from pipeline.ledger.budget import Budget, CallBudget, Reservation
from pipeline.ledger.lost_holds import settle_lost_holds
from pipeline.ledger.reconcile import Reconciler
from pipeline.ledger.recorder import SqlRecorder
from pipeline.llm.attempts import Outcome
from pipeline.redis.keys import Keys
from tests.ledger.conftest import attempt, make_budget, settle
from tests.support.waiting import eventually

LIMIT = Decimal("5.00")
WORST = Decimal("0.40")
COST = Decimal("0.012")


async def _answered(
    budget: Budget, recorder: SqlRecorder, job_id: str, batch: str, *, lease: str = "1"
) -> tuple[CallBudget, Reservation]:
    """A call that reserved its worst case and whose answer is settled `ok` in the ledger
    at COST, its hold still open in Redis (the settle did not reach it)."""
    call = await budget.for_call(batch, LIMIT, job_id=job_id, lease=lease)
    hold = await call.reserve(WORST)
    row = attempt(job_id=job_id, batch_id=batch, estimated=str(WORST))
    row.attempt_id = hold.token
    await recorder.started(row)
    await recorder.settled(settle(row, Outcome.OK, str(COST), input_tokens=10, output_tokens=5))
    return call, hold


async def _batch(budget: Budget, batch: str) -> tuple[Decimal, Decimal]:
    status = (await budget.status(batch))["batch"]
    return status.spent_usd, status.reserved_usd


async def test_the_floor_leaves_an_open_holds_cost_to_its_close(
    aredis: aioredis.Redis, keys: Keys, recorder: SqlRecorder
) -> None:
    """The outage path: reconcile, then the sweeper's recovery settles the hold, then the
    cut-off worker's own settle arrives: spend is the call's cost once, in every scope."""
    budget = make_budget(aredis, keys)
    reconciler = Reconciler(aredis, keys, recorder, budget)
    call, hold = await _answered(budget, recorder, "j1", "b-open")
    await reconciler.rebuild_budgets()
    assert await _batch(budget, "b-open") == (Decimal(0), WORST)  # still held, not yet spent
    done = await settle_lost_holds(budget, recorder, "j1", lease="1")
    assert done.booked == 1
    assert await call.settle(hold, COST) is False
    await reconciler.rebuild_budgets()
    status = await budget.status("b-open")
    assert (status["batch"].spent_usd, status["batch"].reserved_usd) == (COST, Decimal(0))
    assert status["day"].spent_usd == status["month"].spent_usd == COST


async def test_a_call_the_floor_counted_is_not_booked_again_by_a_late_settle(
    aredis: aioredis.Redis, keys: Keys, recorder: SqlRecorder
) -> None:
    """Redis lost its data (the hold with it): the floor books the ledger's cost, and the
    worker that settles the call afterwards adds nothing."""
    budget = make_budget(aredis, keys)
    call, hold = await _answered(budget, recorder, "j2", "b-lost")
    async for key in aredis.scan_iter(match="{" + keys.prefix + "}*", count=1000):
        await aredis.delete(key)  # as a restart without persistence, for this prefix
    await Reconciler(aredis, keys, recorder, budget).rebuild_budgets()
    assert await _batch(budget, "b-lost") == (COST, Decimal(0))
    await call.settle(hold, COST)
    assert await _batch(budget, "b-lost") == (COST, Decimal(0))


async def test_a_lapsed_hold_is_booked_by_the_floor_once_and_corrected_by_the_true_cost(
    aredis: aioredis.Redis, keys: Keys, recorder: SqlRecorder
) -> None:
    """Holds that lapsed with nobody to settle them: the floor books each at its ledger
    cost (an `ok` row's cost; an `abandoned` row's worst case), and a settle that still
    arrives corrects the booking to the true cost rather than adding to it."""
    budget = make_budget(aredis, keys, hold_s=0.2)
    reconciler = Reconciler(aredis, keys, recorder, budget)
    answered, answered_hold = await _answered(budget, recorder, "j3", "b-lapse")
    cut = await budget.for_call("b-lapse", LIMIT, job_id="j4", lease="1")
    cut_hold = await cut.reserve(WORST)
    row = attempt(job_id="j4", batch_id="b-lapse", estimated=str(WORST))
    row.attempt_id = cut_hold.token
    await recorder.started(row)
    assert await recorder.mark_abandoned("j4") == 1  # booked at its worst case in the ledger

    async def lapsed() -> bool:
        return (await _batch(budget, "b-lapse"))[1] == 0

    await eventually(lapsed, timeout_s=10, what="both holds lapsed")
    await reconciler.rebuild_budgets()
    assert await _batch(budget, "b-lapse") == (COST + WORST, Decimal(0))
    await answered.settle(answered_hold, COST)
    await reconciler.rebuild_budgets()
    assert await _batch(budget, "b-lapse") == (COST + WORST, Decimal(0))
    # The cut-off call's answer turns up after all: ledger and budget both take its cost.
    await recorder.settled(settle(row, Outcome.OK, "0.02", input_tokens=10, output_tokens=5))
    await cut.settle(cut_hold, Decimal("0.02"))
    await reconciler.rebuild_budgets()
    assert await _batch(budget, "b-lapse") == (COST + Decimal("0.02"), Decimal(0))


async def test_a_reservation_retried_under_its_token_holds_once(
    aredis: aioredis.Redis, keys: Keys
) -> None:
    """A token names one call: reserving it again (a retried reply, a re-run of a Batch
    Mode group whose requests' ledger rows carry that token) holds nothing more."""
    budget = make_budget(aredis, keys)
    scopes = budget.scopes("b-token", LIMIT)
    first = await budget.reserve(scopes, WORST, token="b-fixed")
    again = await budget.reserve(scopes, WORST, token="b-fixed")
    assert first.token == again.token == "b-fixed"
    assert await _batch(budget, "b-token") == (Decimal(0), WORST)
    assert await budget.settle(first, COST) is True
    await budget.reserve(scopes, WORST, token="b-fixed")  # booked already: nothing held
    assert await _batch(budget, "b-token") == (COST, Decimal(0))
    cancelled = await budget.reserve(scopes, WORST, token="b-other")
    await budget.cancel(cancelled)
    await budget.reserve(scopes, WORST, token="b-other")  # a cancelled token may hold again
    assert await _batch(budget, "b-token") == (COST, WORST)


async def test_many_settled_calls_are_read_but_not_rebooked(
    aredis: aioredis.Redis, keys: Keys, recorder: SqlRecorder
) -> None:
    """Calls whose holds closed normally agree already: the floor changes nothing."""
    budget = make_budget(aredis, keys)
    for i in range(30):
        call, hold = await _answered(budget, recorder, f"j-many-{i}", "b-many")
        await call.settle(hold, COST)
    assert await Reconciler(aredis, keys, recorder, budget).rebuild_budgets() == 0
    assert await _batch(budget, "b-many") == (COST * 30, Decimal(0))


async def test_a_call_settled_while_the_floor_reads_the_ledger_is_booked_once(
    aredis: aioredis.Redis, keys: Keys, recorder: SqlRecorder, engine: Engine
) -> None:
    """Worker B floors its budgets at start while worker A's call is answered: A's row
    turns `ok` in the ledger (from A's own connection) just after the floor's first read of
    it, and A's settle reaches Redis after the floor. Read from two snapshots, the batch's
    sum had the cost but the list of calls (read before) did not, so the floor booked it and
    A's settle booked it again: the batch's spend ended one call above the ledger. Each
    scope's spend must be the call's cost once."""
    budget = make_budget(aredis, keys)
    call = await budget.for_call("b-race", LIMIT, job_id="j-race", lease="1")
    hold = await call.reserve(WORST)
    row = attempt(job_id="j-race", batch_id="b-race", estimated=str(WORST))
    row.attempt_id = hold.token
    await recorder.started(row)  # $0 while the request is on the wire
    answered = settle(row, Outcome.OK, str(COST), input_tokens=10, output_tokens=5)
    fired: list[str] = []

    def a_is_answered(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if fired or "llm_calls" not in statement or not statement.lstrip().startswith("SELECT"):
            return
        fired.append(statement)
        recorder._apply([("call_settled", writes.call_payload(answered))])

    event.listen(engine, "after_cursor_execute", a_is_answered)
    try:
        await Reconciler(aredis, keys, recorder, budget).rebuild_budgets()
    finally:
        event.remove(engine, "after_cursor_execute", a_is_answered)
    assert fired, "the floor read the ledger"
    await call.settle(hold, COST)  # A's settle arrives
    status = await budget.status("b-race")
    assert (status["batch"].spent_usd, status["batch"].reserved_usd) == (COST, Decimal(0))
    assert status["day"].spent_usd == status["month"].spent_usd == COST
