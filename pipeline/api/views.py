"""The JSON of `GET /jobs/{id}`: a job seen from Redis and the ledger together (a batch's view
is tasks/batches.py's, served by api/batches.py), and a `POST /analyze` answer replayed for
its Idempotency-Key with each document's state now (`replayed`).

Redis holds the live state (a job moves from queued to active to complete there first);
the ledger holds what outlives Redis's TTLs and what was paid. Each view prefers the live
state and falls back to the ledger, so a job whose Redis record expired still answers.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.ledger.models import JobRow, LLMCall
from pipeline.ledger.report import WASTED, _money, held_usd
from pipeline.llm.attempts import Outcome
from pipeline.money import format_usd
from pipeline.queue.job import Job
from tasks.result import shown

_ENDED_UNDONE = frozenset({"failed", "dead", "cancelled", "over_budget"})


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _ms_iso(ms: int | None) -> str | None:
    from datetime import UTC, datetime

    return None if not ms else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def call_totals(calls: list[LLMCall]) -> dict[str, Any]:
    """Calls, tokens and dollars of some ledger rows, as `pipeline costs` counts them; money
    as decimal strings. A call still in flight (`started`) is not spent: its worst case, held
    against the budgets, is `held_usd` and it counts in `in_flight_calls`, not `calls` (an
    abandoned call, which may have been billed, is spent at its worst case)."""
    cost, wasted, held, in_flight = Decimal(0), Decimal(0), Decimal(0), 0
    tokens = dict.fromkeys(("input_tokens", "output_tokens", "thinking_tokens"), 0)
    for call in calls:
        if call.outcome == Outcome.STARTED.value:
            in_flight += 1
            held += held_usd(call.outcome, call.cost_usd, call.estimated_cost_usd)
            continue
        amount = _money(call.cost_usd)
        cost += amount
        if call.outcome in WASTED:
            wasted += amount
        for name in tokens:
            tokens[name] += int(getattr(call, name) or 0)
    return {"calls": len(calls) - in_flight, **tokens, "cost_usd": format_usd(cost),
            "wasted_usd": format_usd(wasted), "in_flight_calls": in_flight,
            "held_usd": format_usd(held)}


def ledger_job(session: Session, job_id: str) -> tuple[JobRow | None, dict[str, Any]]:
    row = session.get(JobRow, job_id)
    calls = list(session.scalars(select(LLMCall).where(LLMCall.job_id == job_id)))
    return row, call_totals(calls)


def job_view(job: Job | None, row: JobRow | None, cost: dict[str, Any]) -> dict[str, Any]:
    """`GET /jobs/{id}`: at least one of `job` (Redis) and `row` (ledger) is present."""
    if job is not None:
        return {
            "id": job.id,
            "status": job.state.value,
            "task": job.task,
            "queue": job.queue,
            "batch_id": job.batch,
            "document_id": row.document_id if row else None,
            "attempts": job.attempt,
            # resolved from the claiming worker's task definition (queue/job.py): unknown,
            # not 0, until a worker first claims the job
            "max_attempts": job.max_attempts or None,
            "created_at": _ms_iso(job.created_ms),
            "started_at": _ms_iso(job.started_ms),
            "finished_at": _ms_iso(job.finished_ms),
            # the stage last reported while it ran ("retrying" on a job that then failed
            # for good would read as live): shown only while the job may still run
            "progress": None if job.state.value in _ENDED_UNDONE else job.progress,
            "result": shown(job.result),  # money as every output writes it
            "error": job.error,
            "cost": cost,
        }
    assert row is not None
    return {
        "id": row.id,
        "status": row.status,
        "task": None,
        "queue": None,
        "batch_id": row.batch_id,
        "document_id": row.document_id,
        "attempts": row.attempts,
        "max_attempts": None,
        "created_at": _iso(row.created_at),
        "started_at": _iso(row.started_at),
        "finished_at": _iso(row.finished_at),
        "progress": None,
        "result": None,  # the queue's copy expired; `pipeline results BATCH` reads the ledger
        "error": row.last_error or None,
        "cost": cost,
    }


async def replayed(client: Any, engine: Any, answer: dict[str, Any]) -> dict[str, Any]:
    """The stored `POST /analyze` answer of an Idempotency-Key, each document's `status` and
    `reason` as its jobs say now (tasks/batches.py, the view `GET /batches/{id}` shows): a
    replay after the work finished says complete (failed, ...), never the "queued" of the
    first answer. A document retried since answers for its newest run (`job_id` and
    `status_url` follow it); one that never had a job (refused at upload) is left as
    stored, and so is the whole answer when its batch is not in the ledger."""
    from pipeline.errors import BatchNotFound
    from tasks.batches import batch_view

    try:
        view = await batch_view(client, engine, str(answer["batch_id"]))
    except BatchNotFound:
        return answer
    by_job = {d.job_id: d for d in view.documents if d.job_id}
    names = [d.name for d in view.documents]
    by_name = {d.name: d for d in view.documents if names.count(d.name) == 1}
    documents = []
    for doc in answer["documents"]:
        row = by_job.get(doc.get("job_id")) if doc.get("job_id") else None
        if row is None and doc.get("job_id"):
            row = by_name.get(doc["name"])
        if row is None:
            documents.append(doc)
            continue
        documents.append({**doc, "status": row.status, "reason": row.reason,
                          "job_id": row.job_id, "status_url": f"/jobs/{row.job_id}"})  # fmt: skip
    return {**answer, "documents": documents}
