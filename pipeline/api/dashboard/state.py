"""What the dashboard shows, gathered in one pass from Redis and the ledger.

One function builds the whole picture so the HTML panels, the JSON endpoint and the chart
can never disagree about a number. It reads only cheap things on every refresh: queue
sizes, the worker registry, the dead-letter set's head, the counters in `queue/stats.py`,
the limiter's buckets, and a few grouped ledger queries bounded by day and by batch count.
It never walks every job hash (that is `/metrics`'s slower, scrape-time job).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, func, select

from pipeline.api.metrics import limiter_states
from pipeline.ledger.db import session_factory
from pipeline.ledger.models import Batch, JobRow, LLMCall
from pipeline.ledger.money import DISPLAY_PLACES, format_usd
from pipeline.ledger.report import daily_spend_by_model
from pipeline.queue.client import QueueClient
from pipeline.queue.stats import Stats

TERMINAL = frozenset({"complete", "failed", "dead", "cancelled", "over_budget"})
CHART_DAYS = 14
RECENT_BATCHES = 10
RECENT_FAILURES = 20


def _money(value: Decimal | None) -> str:
    return format_usd(value, DISPLAY_PLACES)


def _ledger(engine: Engine, today: datetime) -> dict[str, Any]:
    """Batches with progress and spend, and spend per day by model: SQL, run in a thread."""
    since = today - timedelta(days=CHART_DAYS - 1)
    with session_factory(engine)() as session:
        batches = list(
            session.scalars(
                select(Batch).order_by(Batch.created_at.desc(), Batch.id).limit(RECENT_BATCHES)
            )
        )
        ids = [b.id for b in batches]
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        spent: dict[str, Decimal] = {}
        if ids:
            for batch_id, status, n in session.execute(
                select(JobRow.batch_id, JobRow.status, func.count())
                .where(JobRow.batch_id.in_(ids))
                .group_by(JobRow.batch_id, JobRow.status)
            ):
                counts[str(batch_id)][str(status)] += int(n)
            for batch_id, cost in session.execute(
                select(LLMCall.batch_id, func.coalesce(func.sum(LLMCall.cost_usd), 0))
                .where(LLMCall.batch_id.in_(ids))
                .group_by(LLMCall.batch_id)
            ):
                spent[str(batch_id)] = Decimal(str(cost))
        daily = daily_spend_by_model(session, since=since)
    rows = []
    for b in batches:
        c = counts.get(b.id, Counter())
        total = sum(c.values())
        done = sum(n for s, n in c.items() if s in TERMINAL)
        cost = spent.get(b.id, Decimal(0))
        rows.append({
            "id": b.id,
            "label": b.label,
            "created_at": b.created_at.isoformat() if b.created_at else None,
            "total": total,
            "done": done,
            "counts": dict(sorted(c.items())),
            "progress": done / total if total else 0.0,
            "spent_usd": _money(cost),
            "budget_usd": None if b.budget_usd is None else _money(b.budget_usd),
            "budget_used": str((cost / b.budget_usd).quantize(Decimal("0.0001")))
            if b.budget_usd else None,  # a share for the <meter>, kept exact
        })  # fmt: skip
    days = [(since + timedelta(days=i)).date().isoformat() for i in range(CHART_DAYS)]
    models = sorted({m for per in daily.values() for m in per})
    return {
        "batches": rows,
        "spend": {
            "days": days,
            "models": models,
            # series[model][i] is that model's spend on days[i], USD as a float for the chart
            "series": {m: [float(daily.get(d, {}).get(m, 0)) for d in days] for m in models},
            "today_usd": _money(sum(daily.get(days[-1], {}).values(), Decimal(0))),
            "today_by_model": {m: _money(v) for m, v in sorted(daily.get(days[-1], {}).items())},
        },
    }


async def dashboard_state(client: QueueClient, engine: Engine, budget: Any) -> dict[str, Any]:
    """The dashboard's whole picture as JSON-ready data (money as decimal strings)."""
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    depths = await client.depths()
    workers = await client.workers()
    dead = await client.dead_jobs(limit=RECENT_FAILURES)
    stats = await Stats(client.redis, client.keys).read()
    limiter = await limiter_states(client)
    budgets = await budget.status()
    ledger = await asyncio.to_thread(_ledger, engine, today)
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
        "failures": [
            {
                "id": j.id,
                "task": j.task,
                "queue": j.queue,
                "state": j.state.value,
                "attempts": j.attempt,
                "max_attempts": j.max_attempts,
                "error": (j.error or "")[:500],
                "finished_ms": j.finished_ms,
                "batch": j.batch,
            }
            for j in dead
        ],
        "limiter": [
            {
                "model": model,
                "tokens_left": round(st["tokens_left"]),
                "requests_left": round(st["requests_left"], 1),
                "in_flight": st["in_flight"],
                "requests_today": st["requests_today"],
                "factor": round(st["factor"], 3),
                "paused_until": st["paused_until"],
                "daily_exhausted_until": st["daily_exhausted_until"],
                "limits": st["limits"],
            }
            for model, st in limiter.items()
        ],
        "budgets": {scope: s.as_dict() for scope, s in budgets.items()},
        **ledger,
    }
