"""`pipeline status [BATCH]`: where the work is and, above all, why it is waiting.

A batch that does not move is the question users bring here. Three things can hold jobs
back without any error: the shared rate limiter (bucket empty, paused after a 429, a daily
quota spent until midnight Pacific), and the day/month budgets (a postponed job waits in
Redis until the window turns over or the budget is raised). So the overview shows the
limiter and budget state from Redis, and a batch's view names each job held by them.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from pipeline.cli.common import JsonOpt, console, ledger_engine
from pipeline.errors import WAITING_REASONS, JobNotFound, Reason
from pipeline.queue.client import QueueClient
from pipeline.queue.job import State

if TYPE_CHECKING:
    from sqlalchemy import Engine

_WAIT_WORDS = {
    Reason.BUDGET_WINDOW: "for the day or month budget window",
    Reason.BUDGET_HOLDS: "for running calls' budget holds to settle",
    Reason.DAILY_QUOTA: "for the provider's daily quota to reset",
    Reason.BUDGET_OVERRUN: "for a person to raise a budget stopped by an overrun",
}
_WAITING_STATES = (State.SCHEDULED, State.QUEUED)


async def _models(client: QueueClient) -> list[str]:
    """The default model, those with their own limits, and any with a bucket in Redis."""
    from pipeline.llm.bucket import bucket_models

    s = client.settings
    return sorted({s.model, *s.limits, *await bucket_models(client.redis, client.keys)})


async def service_state(client: QueueClient) -> dict[str, Any]:
    """Limiter state per model and the day/month budget state, as JSON-ready dicts."""
    from pipeline.ledger.budget import Budget
    from pipeline.llm.limiter import Limiter

    limiter = Limiter(client.redis, client.keys, client.settings)
    limits = [await limiter.state(m) for m in await _models(client)]
    budget = await Budget(client.redis, client.keys, client.settings).status()
    return {"limiter": limits, "budget": {k: v.as_dict() for k, v in budget.items()}}


async def batch_waits(client: QueueClient, job_ids: list[str]) -> list[dict[str, str]]:
    """The batch's jobs that wait for a budget window or a daily quota, and why."""
    from pipeline.llm.limiter import Limiter

    limiter = Limiter(client.redis, client.keys, client.settings)
    exhausted: dict[str, str | None] = {}
    waits = []
    for job_id in job_ids:
        try:
            job = await client.get(job_id)
        except JobNotFound:
            continue
        if job.state not in _WAITING_STATES:
            continue
        if job.reason in WAITING_REASONS:
            waits.append({"job_id": job.id, "state": job.state.value, "kind": str(job.reason),
                          "reason": job.error or ""})  # fmt: skip
            continue
        model = str(job.hints.get("model") or "")
        if model and model not in exhausted:
            exhausted[model] = (await limiter.state(model))["daily_exhausted_until"]
        if model and exhausted.get(model):
            reason = f"{model}: daily quota exhausted until {exhausted[model]}"
            waits.append({"job_id": job.id, "state": job.state.value,
                          "kind": str(Reason.DAILY_QUOTA), "reason": reason})  # fmt: skip
    return waits


def _ledger_job_ids(engine: Engine, batch_id: str) -> list[str]:
    from sqlalchemy import select

    from pipeline.ledger.models import JobRow

    with engine.connect() as conn:
        return [str(i) for i in conn.scalars(select(JobRow.id).where(JobRow.batch_id == batch_id))]


async def _redis_side(batch_job_ids: list[str] | None) -> dict[str, Any]:
    client = await QueueClient.connect()
    try:
        if batch_job_ids is not None:
            return {"waiting": await batch_waits(client, batch_job_ids)}
        return await service_state(client)
    finally:
        await client.aclose()


async def _queue_status() -> dict[str, object]:
    client = await QueueClient.connect()
    try:
        return {"depths": await client.depths(), "workers": await client.workers()}
    finally:
        await client.aclose()


def print_queue_status(data: dict[str, object]) -> None:
    depths = data["depths"]
    assert isinstance(depths, dict)
    table = Table(title="queues")
    for col in ("queue", "ready", "by priority"):
        table.add_column(col)
    for name, q in depths["queues"].items():
        prio = " ".join(f"p{p}:{n}" for p, n in sorted(q["by_priority"].items(), reverse=True))
        table.add_row(name, str(q["ready"]), prio or "-")
    console.print(table)
    console.print(
        f"delayed {depths['delayed']} · active {depths['active']} · dead-letter {depths['dead']}"
    )
    workers = data["workers"]
    assert isinstance(workers, list)
    wt = Table(title=f"workers ({len(workers)} alive)")
    for col in ("worker", "queues", "slots", "state"):
        wt.add_column(col)
    for w in workers:
        wt.add_row(
            w["id"],
            ",".join(w["queues"]),
            f"{w['slots_used']}/{w['concurrency']}",
            w.get("state", ""),
        )
    console.print(wt)


def _print_batch(batch: str, data: dict[str, Any]) -> None:
    table = Table(title=f"batch {batch}" + (f" · {data['label']}" if data["label"] else ""))
    table.add_column("state")
    table.add_column("jobs")
    for state, n in sorted(data["by_state"].items()):
        table.add_row(state, str(n))
    console.print(table)
    budget = f" of ${data['budget_usd']}" if data["budget_usd"] else ""
    console.print(f"{data['documents']} documents · spent ${data['spend_usd']}{budget}",
                  highlight=False)  # fmt: skip
    waiting = data["waiting"]
    if waiting:
        kinds = Counter(w["kind"] for w in waiting)
        for kind, n in kinds.items():
            console.print(f"[yellow]{n} job(s) waiting: {_WAIT_WORDS.get(kind, kind)}[/yellow]",
                          highlight=False, soft_wrap=True)  # fmt: skip
        console.print(f"  e.g. {waiting[0]['reason']}", highlight=False, soft_wrap=True)


def _print_services(state: dict[str, Any]) -> None:
    table = Table(title="rate limits (shared by all workers)")
    for col in ("model", "requests left (rpm)", "tokens left (tpm)", "today (rpd)", "in flight",
                "paused until",
                "daily quota exhausted until"):  # fmt: skip
        table.add_column(col)
    for m in state["limiter"]:
        lim = m["limits"]
        table.add_row(
            m["model"], f"{m['requests_left']:.0f} ({lim['rpm']})",
            f"{m['tokens_left']:.0f} ({lim['tpm']})", f"{m['requests_today']} ({lim['rpd']})",
            str(m["in_flight"]), m["paused_until"] or "-", m["daily_exhausted_until"] or "-",
        )  # fmt: skip
    console.print(table)
    budget = Table(title="budgets")
    for col in ("window", "spent USD", "reserved USD", "limit USD"):
        budget.add_column(col)
    for window, b in state["budget"].items():
        limit = b["limit_usd"] or "none"
        if b.get("stopped"):
            limit += " (stopped: a bill passed its reservation; raise the limit)"
        budget.add_row(window, b["spent_usd"], b["reserved_usd"], limit)
    console.print(budget)


def status(batch: Annotated[str | None, typer.Argument()] = None, as_json: JsonOpt = False) -> None:
    """A batch's jobs by state, spend vs budget and what they wait for; without BATCH,
    queues, workers, rate limits, budgets and recent batches."""
    from tasks.batches import batch_summary, recent_batches
    engine = ledger_engine()
    try:
        if batch is not None:
            data = batch_summary(engine, batch)
            data.update(asyncio.run(_redis_side(_ledger_job_ids(engine, batch))))
            if as_json:
                print(json.dumps(data))
            else:
                _print_batch(batch, data)
            return
        queues = asyncio.run(_queue_status())
        services = asyncio.run(_redis_side(None))
        batches = recent_batches(engine)
    finally:
        engine.dispose()
    if as_json:
        print(json.dumps({**queues, **services, "batches": batches}, default=str))
        return
    print_queue_status(queues)
    _print_services(services)
    table = Table(title="recent batches")
    for col in ("batch", "label", "created", "documents", "spent USD", "budget USD"):
        table.add_column(col)
    for b in batches:
        table.add_row(b["batch_id"], b["label"] or "", (b["created_at"] or "")[:19],
                      str(b["documents"]), b["spend_usd"], b["budget_usd"] or "-")  # fmt: skip
    console.print(table)
