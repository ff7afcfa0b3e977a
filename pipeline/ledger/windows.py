"""The day and month budgets as a person is shown them: never below what the ledger has.

Redis's counters for a UTC day or month live under a key prefix, and are raised to the
ledger's sum only by a worker under that prefix (the reconciler's floor, floor.py). A
`pipeline status` under a prefix where no worker has run yet would read $0 for a day the
shared ledger has spend in. So what `status`, the dashboard and `/metrics` show as a window's
spend is the larger of Redis's counter (which may know of spend the ledger has not been told
yet) and the ledger's settled sum for that window; the ledger is the book of record.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Engine, func, select

from pipeline.ledger.budget import Budget, ScopeStatus
from pipeline.ledger.models import LLMCall, counted_at
from pipeline.llm.attempts import Outcome
from pipeline.money import to_decimal


def ledger_window_spend(engine: Engine, at: datetime) -> dict[str, Decimal]:
    """{"day": USD, "month": USD}: the ledger's settled spend in the UTC day and month holding
    `at` (calls still `started` are holds, not spend), every provider and prefix alike."""
    at = at.astimezone(UTC)
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    next_month = (month + timedelta(days=32)).replace(day=1)
    counted = counted_at()  # the day and month a call's hold counted in
    out = {}
    with engine.connect() as conn:
        for kind, start, end in (("day", day, day + timedelta(days=1)),
                                 ("month", month, next_month)):  # fmt: skip
            total = conn.execute(
                select(func.coalesce(func.sum(LLMCall.cost_usd), 0)).where(
                    counted >= start, counted < end,
                    LLMCall.outcome != Outcome.STARTED.value)
            ).scalar()  # fmt: skip
            out[kind] = to_decimal(total).quantize(Decimal("0.000000001"))
    return out


async def shown_budgets(
    budget: Budget, engine: Engine, batch_id: str | None = None
) -> dict[str, ScopeStatus]:
    """`budget.status()` with each window's spend at least the ledger's (module docstring)."""
    status = await budget.status(batch_id)
    ledger = await asyncio.to_thread(ledger_window_spend, engine, datetime.now(UTC))
    return {kind: replace(st, spent_usd=max(st.spent_usd, ledger[kind])) if kind in ledger
            else st for kind, st in status.items()}  # fmt: skip
