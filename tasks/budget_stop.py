"""A batch whose budget an overrun stopped, as every view of the batch shows it.

A call billed above its reservation stops its batch's budget (pipeline/ledger/budget.py):
no call of the batch is admitted, a retry's neither, until a person sets a limit above the
one in force then. The documents refused meanwhile end over_budget with the command in
their reason; the batch's views (`pipeline status BATCH` and its --json, `GET
/batches/{id}`, the dashboard) say the stop itself: what the overrun calls were billed
against what they reserved, and the one amount that lifts the stop and admits every
document refused under it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pipeline.ledger.budget_words import lifting_usd, set_command
from pipeline.money import dollars, format_usd
from pipeline.words import counted

if TYPE_CHECKING:
    from pipeline.queue.client import QueueClient
    from tasks.batch_ledger import LedgerFacts


@dataclass(frozen=True)
class BudgetStop:
    """The stop on batch `batch_id`'s budget (USD throughout): `stopped_at_usd` is the
    limit in force when it stopped (a new limit must pass it); `billed_usd` and
    `reserved_usd` what the batch's overrun calls (`calls` of them, the ledger's rows
    marked "budget overrun") were billed and had reserved; `lifts_usd` the least limit
    that lifts the stop and admits the calls of every over-budget document at their worst
    case, beside what the budget counts spent and held now (None when none is known)."""

    batch_id: str
    stopped_at_usd: Decimal
    billed_usd: Decimal
    reserved_usd: Decimal
    calls: int
    lifts_usd: Decimal | None

    def words(self) -> str:
        """One sentence: the stop, the overrun behind it, and what lifts it."""
        ref = self.batch_id[:12]
        what = (f"{counted(self.calls, 'call')} billed {dollars(self.billed_usd)} against "
                f"{dollars(self.reserved_usd)} reserved" if self.calls
                else "a call was billed more than it reserved")  # fmt: skip
        if self.lifts_usd is not None:
            lift = (f"{set_command(ref, self.lifts_usd)} lifts it and admits "
                    f"every over-budget document's call at its worst case")  # fmt: skip
        else:
            lift = (f"`pipeline budget {ref} --set` with an amount above "
                    f"{dollars(self.stopped_at_usd)} lifts it")  # fmt: skip
        return (f"the batch's budget is stopped after an overrun ({what}): it admits no call, "
                f"a retry's neither, until its limit is set above "
                f"{dollars(self.stopped_at_usd)}; {lift}")  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        return {
            "stopped": True,
            "stopped_at_usd": format_usd(self.stopped_at_usd),
            "billed_usd": format_usd(self.billed_usd),
            "reserved_usd": format_usd(self.reserved_usd),
            "overrun_calls": self.calls,
            "lifts_usd": None if self.lifts_usd is None else format_usd(self.lifts_usd),
            "says": self.words(),
        }


async def budget_stop(client: QueueClient, facts: LedgerFacts,
                      over_budget: list[str]) -> BudgetStop | None:  # fmt: skip
    """The stop on the batch's budget, None while it admits calls. `over_budget` are the job
    ids of its documents refused by its budget (their refused calls are kept by
    Budget.note_refused). Reads Redis only (no script: `pipeline status` may read a
    replica)."""
    from pipeline.ledger.budget import Budget, from_nanos

    totals = client.keys.budget(f"batch:{facts.batch_id}")
    stopped, spent, held = await client.redis.hmget(totals, "stopped", "spent", "reserved")
    if stopped is None:
        return None
    budget = Budget(client.redis, client.keys, client.settings)
    refused = await budget.refused(facts.batch_id, over_budget)
    stopped_at, spent_usd, held_usd = (from_nanos(v or 0) for v in (stopped, spent, held))
    # all of them at once: the retry runs them together
    lifts = (lifting_usd(stopped_at, spent_usd, held_usd, sum(refused.values(), Decimal(0)))
             if refused else None)  # fmt: skip
    return BudgetStop(facts.batch_id, stopped_at,
                      sum((b for b, _ in facts.overruns), Decimal(0)),
                      sum((r for _, r in facts.overruns), Decimal(0)), len(facts.overruns),
                      lifts)  # fmt: skip
