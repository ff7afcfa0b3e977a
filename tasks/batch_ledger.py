"""A batch as the ledger has it: which documents belong to it, what was paid, which results
are stored, and the batch found by id, prefix or label. Plain blocking SQL: call it in a
thread from async code. tasks/batches.py adds where each run's jobs stand in Redis.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, func, or_, select

from pipeline.errors import AmbiguousBatch, BatchNotFound
from pipeline.ledger.models import Batch, BatchDocument, Document, JobRow, LLMCall, Result
from pipeline.ledger.report import held_usd, spent_usd
from pipeline.llm.attempts import Outcome
from pipeline.llm.spend import OVERRUN_NOTE
from pipeline.money import format_usd
from tasks.result import shown
from tasks.status import reduce_id

NANO = Decimal("0.000000001")
PREFIX_MIN = 4  # shortest id prefix accepted (the dashboard shows 12 characters)


def _money(value: Any) -> Decimal:
    return Decimal(str(value or 0)).quantize(NANO)


def usd(value: Decimal) -> str:
    """Money as fixed-point text at the ledger's precision (pipeline.money)."""
    return format_usd(value)


def resolve_batch(engine: Engine, ref: str) -> str:
    """The batch id `ref` names (see `find_batch`)."""
    return find_batch(engine, ref).batch_id


@dataclass
class Found:
    """The batch a reference names, and `note`: what a person should know about the choice
    ("" when there was none to make: a label several batches carry names the newest)."""

    batch_id: str
    note: str = ""


CANDIDATES_SHOWN = 10


def find_batch(engine: Engine, ref: str, changing: str = "") -> Found:
    """The batch `ref` names: a full id, a unique id prefix (≥ 4 characters, e.g. the 12 the
    dashboard shows) or a label (the newest batch with it; `note` names the others). Raises
    AmbiguousBatch for a prefix several batches start with, or one under 4 characters that
    some do and no label is (listing them), and BatchNotFound when nothing matches.

    `changing` (what a command does to the batch: "cancel", "retry", "set the budget of")
    makes a label several batches carry ambiguous too: a command that changes a batch takes
    no guess at which one was meant, where a read shows the newest and says so."""
    ref = ref.strip()
    with engine.connect() as conn:
        if conn.execute(select(Batch.id).where(Batch.id == ref)).first() is not None:
            return Found(ref)
        found = conn.execute(
            select(Batch.id, Batch.label, Batch.created_at).where(Batch.id.startswith(
                ref, autoescape=True)).order_by(Batch.created_at.desc(), Batch.id)
            .limit(CANDIDATES_SHOWN + 1)
        ).all() if ref else []  # fmt: skip
        labelled = conn.execute(
            select(Batch.id, Batch.label, Batch.created_at).where(Batch.label == ref)
            .order_by(Batch.created_at.desc(), Batch.id).limit(CANDIDATES_SHOWN + 1)
        ).all()  # fmt: skip
    long_enough = len(ref) >= PREFIX_MIN
    if long_enough and len(found) == 1:
        return Found(str(found[0][0]))
    if found and (long_enough or not labelled):
        why = " and ".join(w for w in ("is ambiguous" if len(found) > 1 else "",
                                        "" if long_enough else
                                        f"is shorter than the {PREFIX_MIN} characters an id "
                                        "prefix needs") if w)  # fmt: skip
        why = f"{ref!r} {why}"
        raise AmbiguousBatch(
            f"{why}: {_listed(found, 'batch id starts', 'batch ids start')} with it: "
            f"{_candidates(found)}; give {PREFIX_MIN} or more characters of one",
            [str(r[0]) for r in found],
        )  # fmt: skip
    if labelled and changing and len(labelled) > 1:
        raise AmbiguousBatch(
            f"label {ref!r} names {_listed(labelled, 'batch', 'batches')}: "
            f"{_candidates(labelled)}; to {changing} one, give its id (or its first 12 "
            "characters)",
            [str(r[0]) for r in labelled],
        )  # fmt: skip
    if labelled:
        newest = str(labelled[0][0])
        note = ""
        if len(labelled) > 1:
            note = (f"label {ref!r} names {_listed(labelled, 'batch', 'batches')}; this is "
                    f"the newest, {newest}; the others: {_candidates(labelled[1:])}; give a "
                    "batch's id (or its first 12 characters) to pick another")  # fmt: skip
        return Found(newest, note)
    raise BatchNotFound(
        f"no batch {ref!r} (by id, id prefix or label); `pipeline status` lists recent batches"
    )


def _listed(rows: Any, one: str, many: str) -> str:
    n = len(rows)
    return f"1 {one}" if n == 1 else (f"{n} {many}" if n <= CANDIDATES_SHOWN
                                      else f"more than {CANDIDATES_SHOWN} {many}")  # fmt: skip


def _candidates(rows: Any) -> str:
    """Batches as a person picks among them: id, label and when each was made."""
    out = []
    for batch_id, label, created in rows[:CANDIDATES_SHOWN]:
        facts = [f"label {label}"] if label else []
        if created is not None:
            facts.append(f"created {created:%Y-%m-%d %H:%M:%S}")
        out.append(f"{batch_id} ({', '.join(facts)})" if facts else str(batch_id))
    return "; ".join(out)


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
    provider: str | None = None  # who its run asks; None for members from before 0006


@dataclass
class Call:
    """One ledger row of a call. `cost` is what it spent (0 while in flight) and `held` what
    it holds (its worst case while in flight, else 0): pipeline.ledger.report's `spent_usd`
    and `held_usd`, so no call is both."""

    job_id: str | None
    batch_id: str | None
    document_id: str | None
    cost: Decimal
    outcome: str
    provider: str = ""  # who answered ("" for rows from before migration 0006)
    held: Decimal = Decimal(0)  # in flight (`started`): its worst case, held, not yet spent
    mode: str = ""  # "batch": a request of a Gemini batch job (its row names its own
    # document's job; one from before that, the member's that submitted or collected the group)


@dataclass
class LedgerFacts:
    """Everything the ledger knows of one batch, read in one transaction."""

    batch_id: str
    label: str | None
    created_at: datetime | None
    budget_usd: Decimal | None
    status: str
    spend: Decimal  # its calls' `cost`: settled and abandoned ones; those in flight are held
    members: list[Member]
    results: dict[str, Any]  # document id -> stored result (its model and prompt version)
    calls: list[Call]  # every call of the batch's documents, whichever batch paid, oldest first
    jobs: dict[str, tuple[str, str | None]]  # job id -> (status, last error)
    # the batch's calls billed above their reservation: (billed, reserved) USD each
    overruns: list[tuple[Decimal, Decimal]] = field(default_factory=list)


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
                   r.job_id, r.model, r.prompt_version, r.provider)
            for r in rows
        ]  # fmt: skip
        doc_ids = [m.document_id for m in members]
        calls = [
            Call(c.job_id, c.batch_id, c.document_id, spent_usd(c.outcome, c.cost_usd),
                 c.outcome, c.provider or "",
                 held_usd(c.outcome, c.cost_usd, c.estimated_cost_usd), c.mode or "")
            for c in conn.execute(
                select(LLMCall.job_id, LLMCall.batch_id, LLMCall.document_id, LLMCall.cost_usd,
                       LLMCall.outcome, LLMCall.provider, LLMCall.estimated_cost_usd,
                       LLMCall.mode)
                .where(or_(LLMCall.document_id.in_(doc_ids), LLMCall.batch_id == batch_id))
                .order_by(LLMCall.started_at, LLMCall.id)
            )
        ]  # fmt: skip
        results = _results(conn, members, calls)
        jobs = {
            str(j.id): (str(j.status), j.last_error)
            for j in conn.execute(
                select(JobRow.id, JobRow.status, JobRow.last_error).where(
                    JobRow.document_id.in_(doc_ids)
                )
            )
        }
        overruns = [(_money(r.cost_usd), _money(r.estimated_cost_usd)) for r in conn.execute(
            select(LLMCall.cost_usd, LLMCall.estimated_cost_usd).where(
                LLMCall.batch_id == batch_id, LLMCall.error.startswith(OVERRUN_NOTE))
        )]  # fmt: skip
    spend = sum((c.cost for c in calls if c.batch_id == batch_id), Decimal(0))
    b = batch  # a Core row: the batches columns by name
    return LedgerFacts(
        batch_id, b.label, b.created_at, None if b.budget_usd is None else _money(b.budget_usd),
        b.status, spend, members, results, calls, jobs, overruns,
    )  # fmt: skip


def in_run(call: Call, root: str | None) -> bool:
    """Whether `call` was made by the run rooted at job `root`: the root job itself, its
    parts or its merge (their ids start with the merge job's)."""
    return bool(root and call.job_id and (call.job_id == root
                                          or call.job_id.startswith(reduce_id(root))))  # fmt: skip


def _run_providers(member: Member, calls: list[Call]) -> set[str]:
    """The providers whose calls the member's run made: who answered it, whatever the
    submitter's settings said."""
    return {c.provider for c in calls if c.provider and in_run(c, member.job_id)}


def _results(conn: Any, members: list[Member], calls: list[Call]) -> dict[str, Any]:
    """Each member's stored result for its model, prompt version and provider (newest of
    any, for rows recorded before those were kept): a result counts when the provider the
    member was submitted for, or one whose calls its run made, gave it (the API or `submit`
    may run with other settings than the workers); a result another provider gave (a
    rehearsal, the offline demo) never counts as this member's."""
    rows = conn.execute(
        select(Result.document_id, Result.model, Result.prompt_version, Result.provider,
               Result.data)
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
        if m.provider:
            mine = {m.provider} | _run_providers(m, calls)
            found = [r for r in found if r.provider in mine]
        if found:
            out[m.document_id] = shown(found[-1].data)
    return out


def recent_batches(engine: Engine, limit: int = 10, offset: int = 0,
                   label: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Newest first: id, label, created, document count, spend, held and budget (no states:
    those need Redis; `batch_view` has them). `spend_usd` is what its settled and abandoned
    calls cost, `held_usd` the worst case of its calls in flight (not in the spend), as
    `batch_view` and `pipeline costs --by batch` count them."""
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
        spent: defaultdict[str, Decimal] = defaultdict(Decimal)
        held: defaultdict[str, Decimal] = defaultdict(Decimal)
        # Summed per outcome in SQL; a `started` group's rows one by one, as held_usd reads
        # each (its worst case, or the bound reserved before it was sent).
        for batch_id, outcome, cost in conn.execute(
            select(LLMCall.batch_id, LLMCall.outcome, func.coalesce(func.sum(LLMCall.cost_usd), 0))
            .where(LLMCall.batch_id.in_(ids), LLMCall.outcome != Outcome.STARTED.value)
            .group_by(LLMCall.batch_id, LLMCall.outcome)
        ).all():  # fmt: skip
            spent[str(batch_id)] += spent_usd(outcome, cost)
        for batch_id, outcome, cost, estimated in conn.execute(
            select(LLMCall.batch_id, LLMCall.outcome, LLMCall.cost_usd, LLMCall.estimated_cost_usd)
            .where(LLMCall.batch_id.in_(ids), LLMCall.outcome == Outcome.STARTED.value)
        ).all():  # fmt: skip
            held[str(batch_id)] += held_usd(outcome, cost, estimated)
    return [
        {
            "batch_id": r[0],
            "label": r[1],
            "created_at": r[2].isoformat() if r[2] else None,
            "documents": int(counts.get(r[0], 0)),
            "budget_usd": None if r[3] is None else usd(r[3]),
            "spend_usd": usd(spent.get(r[0], Decimal(0))),
            "held_usd": usd(held.get(r[0], Decimal(0))),  # calls in flight, not in spend_usd
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
