"""Calls cut off in flight by a stop: what a stopped `pipeline run` or `pipeline worker` says.

A job released at shutdown goes back to its queue, but a provider call it had in flight is
cancelled, not finished: the provider may bill it, the ledger books it `abandoned` at its
worst case, and the job's next run sends it again (no answer was stored to reuse). So only
a stop that cut no call can say nothing is paid twice; these rows say how many were cut.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.ledger.models import LLMCall
from pipeline.ledger.report import NANO
from pipeline.llm.attempts import Outcome
from pipeline.money import dollars, to_decimal
from pipeline.words import counted

_CHUNK = 500  # ids per IN (...): SQLite's bound-parameter limit is far above this


@dataclass(frozen=True, slots=True)
class CutCalls:
    """`calls` abandoned rows; `booked_usd` their cost (each at its worst case)."""

    calls: int = 0
    booked_usd: Decimal = Decimal(0)

    def words(self) -> str:
        """In words, or "" when no call was cut: e.g. "6 calls in flight were cut off: they
        may have been billed, are booked at their worst case ($0.085000000), and running
        again pays for them again"."""
        if not self.calls:
            return ""
        one = self.calls == 1
        were, they, are, their, them = (("was", "it", "is", "its", "it") if one
                                        else ("were", "they", "are", "their", "them"))  # fmt: skip
        return (f"{counted(self.calls, 'call')} in flight {were} cut off: {they} may have been "
                f"billed, {are} booked at {their} worst case ({dollars(self.booked_usd)}), "
                f"and running again pays for {them} again")


def cut_calls(engine: Engine, job_ids: Collection[str], since: datetime) -> CutCalls:
    """The `abandoned` ledger rows of `job_ids` that ended at or after `since` (aware UTC;
    the stop's first signal): the calls those jobs had in flight when this process stopped
    them, not one an earlier attempt of the same job abandoned at its timeout. Reads
    committed rows only: flush the recorder first."""
    ids = sorted(set(job_ids))
    calls, booked = 0, Decimal(0)
    start = since.astimezone(UTC)
    with Session(engine) as session:
        for i in range(0, len(ids), _CHUNK):
            rows = session.execute(
                select(LLMCall.cost_usd).where(
                    LLMCall.job_id.in_(ids[i : i + _CHUNK]),
                    LLMCall.outcome == Outcome.ABANDONED.value,
                    LLMCall.finished_at >= start,
                )
            ).all()
            calls += len(rows)
            # SQLite keeps NUMERIC as a double: back to nano-dollars before the Decimal sum
            booked += sum((to_decimal(r.cost_usd).quantize(NANO) for r in rows), Decimal(0))
    return CutCalls(calls, booked)
