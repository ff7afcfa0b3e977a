"""A lost job's budget holds, closed from what the ledger knows (`settle_lost_holds`).

Run by the sweeper's lease-expired hook the moment it recovers the job, by the job-end hook
for a hold whose settle never reached Redis, and again by the reconcile pass
(pipeline/ledger/reconcile.py). A hold's token is its call's attempt id, so the ledger row
says what became of it: settled (ok, error...) -> booked at the row's cost;
`started`/`abandoned` (the call may have been billed) -> booked at once at its worst case,
corrected if the true cost turns up; no row at all -> the request never went out (the row is
written before it is sent) and the hold is released.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from pipeline.ledger.budget import Budget, Reservation
from pipeline.ledger.models import LLMCall
from pipeline.ledger.recorder import SqlRecorder
from pipeline.ledger.write_behind import is_connection_error
from pipeline.llm.attempts import Outcome

NANO = Decimal("0.000000001")


@dataclass
class HoldsSettled:
    """What `settle_lost_holds` did, by action."""

    booked: int = 0  # settled at the ledger row's cost
    abandoned: int = 0  # booked at the worst case: possibly billed
    released: int = 0  # the call never went out

    def __bool__(self) -> bool:
        return bool(self.booked or self.abandoned or self.released)


def _call_rows(recorder: SqlRecorder, ids: list[str]) -> dict[str, tuple[str, Decimal]]:
    with recorder.sessions() as session:
        rows = session.execute(
            select(LLMCall.id, LLMCall.outcome, LLMCall.cost_usd).where(LLMCall.id.in_(ids))
        ).all()
    return {r[0]: (r[1], Decimal(str(r[2] or 0)).quantize(NANO)) for r in rows}


async def settle_lost_holds(
    budget: Budget,
    recorder: SqlRecorder,
    job_id: str,
    *,
    lease: str | None = None,
    keep_lease: str | None = None,
) -> HoldsSettled:
    """Close the open budget holds of `job_id` whose run is over: those taken under `lease`
    (the recovered run's fencing token), or with `lease` None every one not taken under
    `keep_lease` (the live run's). The module docstring says what each becomes; returns
    how many by action."""
    done = HoldsSettled()
    holds = [
        h for h in await budget.job_holds(job_id)
        if (lease is None or h.lease == lease) and (keep_lease is None or h.lease != keep_lease)
    ]  # fmt: skip
    if not holds:
        return done
    rows: dict[str, tuple[str, Decimal]] | None
    try:
        rows = await asyncio.to_thread(_call_rows, recorder, [h.token for h in holds])
    except sa_exc.SQLAlchemyError as exc:
        if not is_connection_error(exc):
            raise
        rows = None
    # A missing row proves the call never went out only when no write can be on its way.
    unsure = rows is None or await recorder.queue_behind_buffer()
    for hold in holds:
        await _settle_one(budget, hold, None if rows is None else rows.get(hold.token),
                          unsure, done)  # fmt: skip
    return done


async def _settle_one(
    budget: Budget,
    hold: Reservation,
    row: tuple[str, Decimal] | None,
    unsure: bool,
    done: HoldsSettled,
) -> None:
    if row is None:
        if unsure:
            done.abandoned += await budget.abandon(hold, hold.amount_usd)
        else:
            done.released += await budget.cancel(hold)
        return
    outcome, cost = row
    if outcome == Outcome.STARTED.value:
        done.abandoned += await budget.abandon(hold, hold.amount_usd)
    elif outcome == Outcome.ABANDONED.value:
        done.abandoned += await budget.abandon(hold, cost)
    else:
        done.booked += await budget.settle(hold, cost)
