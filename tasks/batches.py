"""Reading a batch back from the ledger: its jobs by state, its spend against its budget, its
documents' results. The ledger, not Redis, is the source here because job records in Redis
expire (PIPELINE_RESULT_TTL_S) while the ledger keeps what was done and paid for.

Plain synchronous functions over an Engine: callers in async code run them in a thread.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, func, select

from pipeline.errors import InputError
from pipeline.ledger.models import Batch, Document, JobRow, LLMCall, Result
from pipeline.ledger.money import format_usd

NANO = Decimal("0.000000001")


def _money(value: Any) -> Decimal:
    return Decimal(str(value or 0)).quantize(NANO)


def batch_spend(engine: Engine, batch_id: str) -> Decimal:
    with engine.connect() as conn:
        rows = conn.execute(select(LLMCall.cost_usd).where(LLMCall.batch_id == batch_id)).all()
    return sum((_money(r[0]) for r in rows), Decimal(0))


def document_spend(engine: Engine, batch_id: str) -> dict[str, Decimal]:
    """USD per document id for this batch's calls."""
    out: dict[str, Decimal] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            select(LLMCall.document_id, LLMCall.cost_usd).where(LLMCall.batch_id == batch_id)
        ).all()
    for doc, cost in rows:
        out[doc or ""] = out.get(doc or "", Decimal(0)) + _money(cost)
    return out


def batch_summary(engine: Engine, batch_id: str) -> dict[str, Any]:
    """Counts by job state, spend and budget: what `pipeline status BATCH` shows."""
    with engine.connect() as conn:
        batch = conn.execute(select(Batch).where(Batch.id == batch_id)).first()
        if batch is None:
            raise InputError(
                f"no batch {batch_id!r} in the ledger; `pipeline status` lists recent batches"
            )
        jobs = conn.execute(
            select(JobRow.status, JobRow.document_id).where(JobRow.batch_id == batch_id)
        ).all()
    spend = batch_spend(engine, batch_id)
    return {
        "batch_id": batch_id,
        "label": batch.label,
        "created_at": batch.created_at.isoformat() if batch.created_at else None,
        "jobs": len(jobs),
        "documents": len({d for _, d in jobs if d}),
        "by_state": dict(Counter(s for s, _ in jobs)),
        "spend_usd": format_usd(spend),
        "budget_usd": None if batch.budget_usd is None else format_usd(batch.budget_usd),
    }


def recent_batches(engine: Engine, limit: int = 10) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(Batch.id, Batch.label, Batch.created_at, Batch.budget_usd)
            .order_by(Batch.created_at.desc())
            .limit(limit)
        ).all()
        counts = dict(
            conn.execute(
                select(JobRow.batch_id, func.count(func.distinct(JobRow.document_id)))
                .where(JobRow.batch_id.in_([r[0] for r in rows]))
                .group_by(JobRow.batch_id)
            ).all()
        )
    return [
        {
            "batch_id": r[0],
            "label": r[1],
            "created_at": r[2].isoformat() if r[2] else None,
            "documents": counts.get(r[0], 0),
            "budget_usd": None if r[3] is None else format_usd(r[3]),
            "spend_usd": format_usd(batch_spend(engine, r[0])),
        }
        for r in rows
    ]


def batch_results(engine: Engine, batch_id: str) -> list[dict[str, Any]]:
    """One entry per document of the batch: its name, pages and newest stored analysis
    (None while it is still being analysed or when it failed)."""
    with engine.connect() as conn:
        if conn.execute(select(Batch.id).where(Batch.id == batch_id)).first() is None:
            raise InputError(
                f"no batch {batch_id!r} in the ledger; `pipeline status` lists recent batches"
            )
        docs = conn.execute(
            select(Document.id, Document.file_name, Document.pages, Document.sha256)
            .where(Document.id.in_(select(JobRow.document_id).where(JobRow.batch_id == batch_id)))
            .order_by(Document.file_name)
        ).all()
        results = conn.execute(
            select(Result.document_id, Result.model, Result.prompt_version, Result.data)
            .where(Result.document_id.in_([d[0] for d in docs]))
            .order_by(Result.created_at)
        ).all()
    newest = {r[0]: r for r in results}
    out = []
    for doc_id, name, pages, sha in docs:
        r = newest.get(doc_id)
        out.append({
            "document_id": doc_id, "name": name, "pages": pages, "sha256": sha,
            "model": r[1] if r else None, "prompt_version": r[2] if r else None,
            "analysis": r[3] if r else None,
        })  # fmt: skip
    return out
