"""`pipeline budget raise BATCH USD`: a person's answer to a batch stopped by an overrun.

A batch's limit travels in its jobs' arguments, so raising it means telling the budget in
Redis (which every reservation reads) and the ledger (which `status` and the API read). A
batch stops admitting calls when a call was billed above its reservation (README, Costs);
a limit above the one in force then lifts the stop. Day and month limits are settings
(PIPELINE_BUDGET_DAY_USD, PIPELINE_BUDGET_MONTH_USD): raise those in the environment.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Annotated

import typer

from pipeline.cli.common import console, ledger_engine
from pipeline.ledger.money import format_usd

budget_app = typer.Typer(help="Batch budgets: raise a limit (lifts an overrun stop).",
                         no_args_is_help=True)  # fmt: skip


@budget_app.command("raise")
def raise_budget(
    batch: Annotated[str, typer.Argument(help="The batch id `submit` printed.")],
    usd: Annotated[str, typer.Argument(help="The new limit in USD, e.g. 5.00.")],
) -> None:
    """Set a batch's budget to USD; calls admitted from now on are checked against it, and
    a stop after an overrun is lifted when USD is above the limit in force then."""
    from pipeline.ledger.budget import check_budget_usd

    limit = check_budget_usd(usd.strip().lstrip("$"), "USD")
    stopped_at = asyncio.run(_raise(batch, limit))
    if stopped_at is not None and limit <= stopped_at:
        note = (f"still stopped: an overrun stopped it at ${format_usd(stopped_at)}; "
                "give a higher limit")  # fmt: skip
    elif stopped_at is not None:
        note = "the stop after an overrun is lifted"
    else:
        note = "it was not stopped"
    console.print(f"batch {batch}: limit ${format_usd(limit)}; {note}", highlight=False,
                  soft_wrap=True)  # fmt: skip


async def _raise(batch: str, limit: Decimal) -> Decimal | None:
    """Raise the limit in Redis and the ledger; the limit an overrun stopped it at, if any."""
    from pipeline.ledger.budget import Budget
    from pipeline.ledger.recorder import SqlRecorder
    from pipeline.queue.client import QueueClient

    client = await QueueClient.connect()
    engine = await asyncio.to_thread(ledger_engine)
    try:
        budget = Budget(client.redis, client.keys, client.settings)
        (scope, *_) = budget.scopes(batch, limit)
        stopped_at = await budget.raise_limit(scope, limit)
        await SqlRecorder(engine, client.redis, client.keys).upsert_batch(batch, budget_usd=limit)
        return stopped_at
    finally:
        await client.aclose()
        await asyncio.to_thread(engine.dispose)
