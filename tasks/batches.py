"""A batch read back: every document with its state (tasks/status.py), pages, cost and result.

The ledger says which documents belong to the batch (`batch_documents`, also those answered
by a run of another batch), what was paid and which results are stored; Redis says where each
run's jobs stand. Job records in Redis expire (PIPELINE_RESULT_TTL_S): a job without one is
read from the ledger's `jobs` row instead.

`read_ledger` is plain blocking SQL (call it in a thread from async code); `batch_view`
gathers both sides.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, func, or_, select

from pipeline.errors import BatchNotFound, InputError
from pipeline.ledger.models import Batch, BatchDocument, Document, JobRow, LLMCall, Result
from pipeline.ledger.report import WASTED
from tasks.modes import annotate_modes
from tasks.status import (
    DocumentState,
    JobView,
    Run,
    Surroundings,
    derive,
    part_count,
    part_id,
    reduce_id,
)

if TYPE_CHECKING:
    from pipeline.queue.client import QueueClient
from pipeline.ledger.money import format_usd

NANO = Decimal("0.000000001")
PREFIX_MIN = 4  # shortest id prefix accepted (the dashboard shows 12 characters)


def _money(value: Any) -> Decimal:
    return Decimal(str(value or 0)).quantize(NANO)


def usd(value: Decimal) -> str:
    """Money as fixed-point text at the ledger's precision (pipeline.ledger.money)."""
    return format_usd(value)


def resolve_batch(engine: Engine, ref: str) -> str:
    """The batch id `ref` names: a full id, a unique id prefix (≥ 4 characters, e.g. the 12 the
    dashboard shows) or a label (the newest batch with it). Raises BatchNotFound, or
    InputError for a prefix several batches share."""
    ref = ref.strip()
    with engine.connect() as conn:
        if conn.execute(select(Batch.id).where(Batch.id == ref)).first() is not None:
            return ref
        if len(ref) >= PREFIX_MIN:
            found = conn.scalars(
                select(Batch.id).where(Batch.id.startswith(ref, autoescape=True)).limit(5)
            ).all()
            if len(found) == 1:
                return str(found[0])
            if found:
                raise InputError(
                    f"{ref!r} starts {len(found)}+ batch ids ({', '.join(found[:3])}…); "
                    "give more characters"
                )
        labelled = conn.scalar(
            select(Batch.id).where(Batch.label == ref).order_by(Batch.created_at.desc()).limit(1)
        )
    if labelled is not None:
        return str(labelled)
    raise BatchNotFound(
        f"no batch {ref!r} (by id, id prefix or label); `pipeline status` lists recent batches"
    )


@dataclass
class Member:
    """A document of the batch as the ledger has it; `job_id` roots its current run."""

    document_id: str
    name: str
    pages: int | None
    size_bytes: int | None
    job_id: str | None
    model: str | None
    prompt_version: str | None


@dataclass
class Call:
    job_id: str | None
    batch_id: str | None
    document_id: str | None
    cost: Decimal
    outcome: str


@dataclass
class LedgerFacts:
    """Everything the ledger knows of one batch, read in one transaction."""

    batch_id: str
    label: str | None
    created_at: datetime | None
    budget_usd: Decimal | None
    status: str
    spend: Decimal
    members: list[Member]
    results: dict[str, Any]  # document id -> stored result (its model and prompt version)
    calls: list[Call]  # every call of the batch's documents, whichever batch paid
    jobs: dict[str, tuple[str, str | None]]  # job id -> (status, last error)


def read_ledger(engine: Engine, batch_id: str) -> LedgerFacts:
    """The batch's ledger side. Raises InputError when there is no such batch."""
    with engine.connect() as conn:
        batch = conn.execute(select(Batch).where(Batch.id == batch_id)).first()
        if batch is None:
            raise BatchNotFound(
                f"no batch {batch_id!r} in the ledger; `pipeline status` lists recent batches"
            )
        rows = conn.execute(
            select(BatchDocument, Document.file_name, Document.pages, Document.bytes)
            .outerjoin(Document, Document.id == BatchDocument.document_id)
            .where(BatchDocument.batch_id == batch_id)
            .order_by(BatchDocument.created_at, BatchDocument.name)
        ).all()
        members = [
            Member(r.document_id, r.name or r.file_name or r.document_id, r.pages, r.bytes,
                   r.job_id, r.model, r.prompt_version)
            for r in rows
        ]  # fmt: skip
        doc_ids = [m.document_id for m in members]
        results = _results(conn, members)
        calls = [
            Call(c.job_id, c.batch_id, c.document_id, _money(c.cost_usd), c.outcome)
            for c in conn.execute(
                select(LLMCall.job_id, LLMCall.batch_id, LLMCall.document_id, LLMCall.cost_usd,
                       LLMCall.outcome)
                .where(or_(LLMCall.document_id.in_(doc_ids), LLMCall.batch_id == batch_id))
            )
        ]  # fmt: skip
        jobs = {
            str(j.id): (str(j.status), j.last_error)
            for j in conn.execute(
                select(JobRow.id, JobRow.status, JobRow.last_error).where(
                    JobRow.document_id.in_(doc_ids)
                )
            )
        }
    spend = sum((c.cost for c in calls if c.batch_id == batch_id), Decimal(0))
    b = batch  # a Core row: the batches columns by name
    return LedgerFacts(
        batch_id, b.label, b.created_at, None if b.budget_usd is None else _money(b.budget_usd),
        b.status, spend, members, results, calls, jobs,
    )  # fmt: skip


def _results(conn: Any, members: list[Member]) -> dict[str, Any]:
    """Each member's stored result for its model and prompt version (newest of any, for rows
    recorded before those were kept)."""
    rows = conn.execute(
        select(Result.document_id, Result.model, Result.prompt_version, Result.data)
        .where(Result.document_id.in_([m.document_id for m in members]))
        .order_by(Result.created_at)
    ).all()
    by_doc: dict[str, list[Any]] = {}
    for r in rows:
        by_doc.setdefault(r.document_id, []).append(r)
    out: dict[str, Any] = {}
    for m in members:
        found = by_doc.get(m.document_id, [])
        if m.model and m.prompt_version:
            found = [r for r in found if (r.model, r.prompt_version) == (m.model, m.prompt_version)]
        if found:
            out[m.document_id] = found[-1].data
    return out


async def read_runs(
    client: QueueClient, roots: list[str], ledger_jobs: dict[str, tuple[str, str | None]]
) -> dict[str, Run]:
    """Each root job's run from Redis, a job without a record from the ledger's row."""
    k = client.keys
    async with client.redis.pipeline(transaction=False) as pipe:
        for root in roots:
            pipe.hgetall(k.job(root))
            pipe.hgetall(k.job(reduce_id(root)))
        replies = await pipe.execute()

    def view(job_id: str, h: dict[Any, Any] | None) -> JobView | None:
        if h:
            return JobView.from_hash({_s(a): _s(b) for a, b in h.items()})
        row = ledger_jobs.get(job_id)
        return JobView.from_ledger(job_id, *row) if row else None

    runs: dict[str, Run] = {}
    wanted: list[tuple[str, int]] = []
    for i, root in enumerate(roots):
        run = Run(view(root, replies[2 * i]), view(reduce_id(root), replies[2 * i + 1]))
        n = part_count(run.root) or sum(j.startswith(reduce_id(root) + ".") for j in ledger_jobs)
        wanted += [(root, p) for p in range(n)]
        runs[root] = run
    if wanted:
        async with client.redis.pipeline(transaction=False) as pipe:
            for root, p in wanted:
                pipe.hgetall(k.job(part_id(root, p)))
            parts = await pipe.execute()
        for (root, p), h in zip(wanted, parts, strict=True):
            runs[root].parts.append(view(part_id(root, p), h))
    return runs


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def surroundings(client: QueueClient, runs: list[Run]) -> Surroundings:
    """Which queues a live worker serves, and the models paused or out of daily quota."""
    from pipeline.llm.limiter import Limiter

    workers = await client.workers()
    served = {q for w in workers if w.get("state", "running") == "running" for q in w["queues"]}
    around = Surroundings(served_queues=served)
    models = {j.model for r in runs for j in r.jobs() if j.state == "queued" and j.model}
    limiter = Limiter(client.redis, client.keys, client.settings)
    for model in sorted(models):
        state = await limiter.state(model)
        if state["daily_exhausted_until"]:
            around.quota_until[model] = state["daily_exhausted_until"]
        if state["paused_until"]:
            around.paused_until[model] = state["paused_until"]
    return around


@dataclass
class DocumentRow:
    """One document of a batch view. `as_json()` is the public shape; the rest (its run's job
    ids, where its cost was paid, the job its state comes from) serves the CLI and dashboard."""

    name: str
    document_id: str
    pages: int | None
    job_id: str | None
    state: DocumentState
    cost: Decimal
    wasted: Decimal
    result: Any
    paid_in: list[str] = field(default_factory=list)  # other batches its cost was booked to
    run: Run | None = None
    mode: dict[str, Any] | None = None  # tasks/modes.py's choice (batch_fallback.annotate)

    @property
    def status(self) -> str:
        return self.state.status

    @property
    def reason(self) -> str | None:
        if self.state.status == "complete" and self.paid_in:
            where = ", ".join(b[:12] for b in self.paid_in)
            return f"answered by a run paid in batch {where} (${usd(self.cost)}, not paid again)"
        return self.state.reason

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "document_id": self.document_id,
            "status": self.status,
            "reason": self.reason,
            "pages": self.pages,
            "cost_usd": usd(self.cost),
            "wasted_usd": usd(self.wasted),
            "result": self.result,
            "mode": self.mode,
        }


@dataclass
class BatchView:
    """A batch as `pipeline status BATCH --json` and `GET /batches/{id}` show it."""

    facts: LedgerFacts
    documents: list[DocumentRow]

    @property
    def by_state(self) -> dict[str, int]:
        return dict(sorted(Counter(d.status for d in self.documents).items()))

    def waiting(self) -> list[dict[str, Any]]:
        return [
            {"name": d.name, "document_id": d.document_id, "job_id": d.state.job_id,
             "kind": d.state.kind, "reason": d.state.reason, "until": d.state.until}
            for d in self.documents if d.status == "waiting"
        ]  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        f = self.facts
        return {
            "batch_id": f.batch_id,
            "label": f.label,
            "documents": [d.as_json() for d in self.documents],
            "by_state": self.by_state,
            "spend_usd": usd(f.spend),
            "budget_usd": None if f.budget_usd is None else usd(f.budget_usd),
            "waiting": self.waiting(),
        }


def _in_run(call: Call, root: str | None) -> bool:
    return bool(root and call.job_id and (call.job_id == root
                                          or call.job_id.startswith(reduce_id(root))))  # fmt: skip


def document_rows(facts: LedgerFacts, runs: dict[str, Run], around: Surroundings) -> list[
        DocumentRow]:  # fmt: skip
    """Each member's state, cost and result. A document's cost is what this batch paid for it
    plus what its current run cost where it was paid (shown as paid there); a document whose
    result was stored by an earlier run shows that run's cost, as paid where it was."""
    by_doc: dict[str, list[Call]] = {}
    for call in facts.calls:
        by_doc.setdefault(call.document_id or "", []).append(call)
    rows = []
    for m in facts.members:
        run = runs.get(m.job_id or "") or Run(None)
        has_result = m.document_id in facts.results
        state = derive(run, has_result, around)
        calls = [c for c in by_doc.get(m.document_id, [])
                 if c.batch_id == facts.batch_id or _in_run(c, m.job_id)]  # fmt: skip
        if not calls and has_result:
            calls = by_doc.get(m.document_id, [])
        paid_in = sorted({c.batch_id for c in calls if c.batch_id and c.cost
                          and c.batch_id != facts.batch_id})  # fmt: skip
        rows.append(DocumentRow(
            m.name, m.document_id, m.pages, m.job_id, state,
            sum((c.cost for c in calls), Decimal(0)),
            sum((c.cost for c in calls if c.outcome in WASTED), Decimal(0)),
            facts.results.get(m.document_id), paid_in, run,
        ))  # fmt: skip
    return rows


async def batch_view(client: QueueClient, engine: Engine, ref: str) -> BatchView:
    """The batch `ref` names (id, prefix or label), every document's state derived now."""
    batch_id = await asyncio.to_thread(resolve_batch, engine, ref)
    facts = await asyncio.to_thread(read_ledger, engine, batch_id)
    roots = [m.job_id for m in facts.members if m.job_id]
    runs = await read_runs(client, roots, facts.jobs)
    around = await surroundings(client, list(runs.values()))
    rows = document_rows(facts, runs, around)
    await annotate_modes(client, rows)
    return BatchView(facts, rows)


def recent_batches(engine: Engine, limit: int = 10, offset: int = 0,
                   label: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Newest first: id, label, created, document count, spend and budget (no states: those
    need Redis; `batch_view` has them)."""
    with engine.connect() as conn:
        stmt = select(Batch.id, Batch.label, Batch.created_at, Batch.budget_usd)
        if label is not None:
            stmt = stmt.where(Batch.label == label)
        rows = conn.execute(
            stmt.order_by(Batch.created_at.desc(), Batch.id).offset(offset).limit(limit)
        ).all()
        ids = [r[0] for r in rows]
        counts = dict(conn.execute(
            select(BatchDocument.batch_id, func.count()).where(BatchDocument.batch_id.in_(ids))
            .group_by(BatchDocument.batch_id)
        ).all())  # fmt: skip
        spent = dict(conn.execute(
            select(LLMCall.batch_id, func.coalesce(func.sum(LLMCall.cost_usd), 0))
            .where(LLMCall.batch_id.in_(ids)).group_by(LLMCall.batch_id)
        ).all())  # fmt: skip
    return [
        {
            "batch_id": r[0],
            "label": r[1],
            "created_at": r[2].isoformat() if r[2] else None,
            "documents": int(counts.get(r[0], 0)),
            "budget_usd": None if r[3] is None else usd(r[3]),
            "spend_usd": usd(spent.get(r[0], Decimal(0))),
        }
        for r in rows
    ]


def last_call_error(engine: Engine, batch_id: str, within_s: float = 120.0) -> str | None:
    """The error of the batch's last finished call when that call failed (recently): what the
    provider says right now, while jobs back off and retry. None when the newest call
    succeeded, or none failed in the last `within_s` seconds."""
    from datetime import UTC, timedelta
    from datetime import datetime as dt

    since = dt.now(UTC) - timedelta(seconds=within_s)
    with engine.connect() as conn:
        row = conn.execute(
            select(LLMCall.outcome, LLMCall.error, LLMCall.model)
            .where(LLMCall.batch_id == batch_id, LLMCall.finished_at >= since)
            .order_by(LLMCall.finished_at.desc())
            .limit(1)
        ).first()
    if row is None or row.outcome not in ("error", "rate_limited") or not row.error:
        return None
    return f"the last call to {row.model} failed: {row.error}"
