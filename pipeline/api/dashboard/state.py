"""What the dashboard shows, gathered in one pass from Redis and the ledger.

One function builds the whole picture so the HTML panels, the JSON endpoint and the chart
can never disagree about a number. It reads only bounded things on every refresh: queue
sizes, the worker registry, the dead-letter set's head, the counters in `queue/stats.py`,
the limiter's buckets, spend per day, and the newest batches' views (tasks/batches.py: every
document's state derived from its jobs, exactly as `pipeline status BATCH` shows it, so the
failures panel and the batch counts agree with the CLI). It never walks every job hash.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine

from pipeline.api.metrics import limiter_states
from pipeline.ledger.db import session_factory
from pipeline.ledger.report import daily_spend_by_model
from pipeline.ledger.windows import shown_budgets
from pipeline.llm.bucket import BURST_NOTE
from pipeline.money import format_usd
from pipeline.queue.client import QueueClient
from pipeline.queue.stats import Stats
from tasks.batches import BatchView, batch_view, recent_batches
from tasks.status import ENDED

CHART_DAYS = 14
RECENT_BATCHES = 10
RECENT_FAILURES = 20


def _money(value: Decimal | None) -> str:
    return format_usd(value)


def _spend(engine: Engine, today: datetime) -> dict[str, Any]:
    """Spend per day by model and provider for the chart (a rehearsal's series says so):
    SQL, run in a thread."""
    since = today - timedelta(days=CHART_DAYS - 1)
    with session_factory(engine)() as session:
        daily = daily_spend_by_model(session, since=since)
    days = [(since + timedelta(days=i)).date().isoformat() for i in range(CHART_DAYS)]
    models = sorted({m for per in daily.values() for m in per})
    return {
        "days": days,
        "models": models,
        # series[model][i] is that model's spend on days[i], USD as a float for the chart
        "series": {m: [float(daily.get(d, {}).get(m, 0)) for d in days] for m in models},
        "today_usd": _money(sum(daily.get(days[-1], {}).values(), Decimal(0))),
        "today_by_model": {m: _money(v) for m, v in sorted(daily.get(days[-1], {}).items())},
    }


async def batch_views(client: QueueClient, engine: Engine,
                      limit: int = RECENT_BATCHES) -> list[BatchView]:  # fmt: skip
    """The newest batches, each document's state derived as `pipeline status` derives it."""
    batches = await asyncio.to_thread(recent_batches, engine, limit)
    return [await batch_view(client, engine, b["batch_id"]) for b in batches]


def _batch_row(view: BatchView) -> dict[str, Any]:
    f = view.facts
    counts = view.by_state
    total = len(view.documents)
    done = sum(n for state, n in counts.items() if state in ENDED)
    # Why documents wait, grouped: a Batch Mode group's members share one reason ("in Gemini
    # batch batches/…, state RUNNING since T"), the same words `pipeline status` shows.
    why = Counter(w["reason"] for w in view.waiting() if w["reason"])
    return {
        "waiting": [{"reason": r, "documents": n} for r, n in sorted(why.items())],
        # complete documents with pages nobody read (no text layer): not to pass as analysed
        "unread": sum(d.unread is not None for d in view.documents),
        "id": f.batch_id,
        "label": f.label,
        "created_at": f.created_at.isoformat() if f.created_at else None,
        "total": total,
        "done": done,
        "counts": counts,
        "progress": done / total if total else 0.0,
        "spent_usd": _money(f.spend),
        # calls in flight, not in spent_usd: their worst case, held (`pipeline costs`)
        "held_usd": _money(view.held),
        "budget_usd": None if f.budget_usd is None else _money(f.budget_usd),
        # after an overrun: the stop, billed vs reserved, and what lifts it (as status says)
        "budget_stop": None if view.budget_stop is None else view.budget_stop.as_json(),
        # a share for the <meter>, kept exact
        "budget_used": str((f.spend / f.budget_usd).quantize(Decimal("0.0001")))
        if f.budget_usd else None,
    }


def _document_failures(views: list[BatchView]) -> list[dict[str, Any]]:
    """Failed (and dead), over-budget documents of the recent batches, with the whole reason."""
    out = []
    for view in views:
        for d in view.documents:
            if d.status not in ("failed", "over_budget"):
                continue
            out.append({
                "kind": "document", "id": d.state.job_id or d.job_id or "",
                "batch": view.facts.batch_id, "document": d.name,
                "document_id": d.document_id, "status": d.status,
                "state": d.state.job_state or d.status, "error": d.reason or "",
                "task": None, "queue": None, "attempts": None, "max_attempts": None,
                "finished_ms": None, "cost_usd": _money(d.cost),
            })  # fmt: skip
    return out


def _job_failure(j: Any) -> dict[str, Any]:
    """A dead job of no document (a task other than the analysis), from the dead-letter set."""
    return {
        "kind": "job", "id": j.id, "task": j.task, "queue": j.queue, "state": j.state.value,
        "attempts": j.attempt, "max_attempts": j.max_attempts, "error": j.error or "",
        "finished_ms": j.finished_ms, "batch": j.batch, "document": None,
        "document_id": None, "status": j.state.value, "cost_usd": None,
    }  # fmt: skip


async def dashboard_state(client: QueueClient, engine: Engine, budget: Any) -> dict[str, Any]:
    """The dashboard's whole picture as JSON-ready data (money as decimal strings)."""
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    depths = await client.depths()
    workers = await client.workers()
    dead = await client.dead_jobs(limit=RECENT_FAILURES)
    stats = await Stats(client.redis, client.keys).read()
    limiter = await limiter_states(client)
    budgets = await shown_budgets(budget, engine)  # never below the ledger's
    spend = await asyncio.to_thread(_spend, engine, today)
    views = await batch_views(client, engine)
    # Dead jobs that belong to a document show as that document's failure, once.
    in_documents = {job.id for v in views for d in v.documents if d.run for job in d.run.jobs()}
    failures = _document_failures(views)
    failures += [_job_failure(j) for j in dead if j.id not in in_documents]
    settled: Counter[str] = Counter()
    for (_, _, outcome), n in stats.settled.items():
        settled[outcome] += n
    return {
        "now_ms": int(time.time() * 1000),
        "queues": {
            "queues": {
                name: {
                    "ready": q["ready"],
                    "by_priority": {str(p): n for p, n in sorted(q["by_priority"].items())},
                }
                for name, q in depths["queues"].items()
            },
            "ready": sum(q["ready"] for q in depths["queues"].values()),
            "delayed": depths["delayed"],
            "active": depths["active"],
            "dead": depths["dead"],
        },
        "totals": {
            "settled": dict(sorted(settled.items())),
            "lease_expiries": sum(stats.lease_expired.values()),
            "fenced": sum(stats.fenced.values()),
        },
        "workers": [
            {
                "id": w["id"],
                "host": w.get("host"),
                "pid": w.get("pid"),
                "state": w.get("state"),
                "queues": w.get("queues", []),
                "concurrency": w.get("concurrency", 0),
                "slots_used": w.get("slots_used", 0),
                "jobs": w.get("jobs", []),
                "heartbeat_ms": w.get("heartbeat_ms", 0),
            }
            for w in workers
        ],
        "failures": failures,
        "limiter": [
            {
                "model": model,
                # used: sent and counted against the provider's quota
                "requests_in_window": st["requests_in_window"],
                "requests_today": st["requests_today"],
                # left: what may start now, out of a small burst that is full when idle
                "tokens_left": round(st["tokens_left"]),
                "tokens_burst": round(st["tokens_burst"]),
                "requests_left": round(st["requests_left"], 1),
                "requests_burst": round(st["requests_burst"]),
                "in_flight": st["in_flight"],
                "factor": round(st["factor"], 3),
                "paused_until": st["paused_until"],
                "daily_exhausted_until": st["daily_exhausted_until"],
                "limits": st["limits"],
            }
            for model, st in limiter.items()
        ],
        "limiter_note": BURST_NOTE,
        "budgets": {scope: s.as_dict() for scope, s in budgets.items()},
        "batches": [_batch_row(v) for v in views],
        "spend": spend,
    }
