"""A batch read back: every document with its state (tasks/status.py), pages, cost and result.

The ledger says which documents belong to the batch (`batch_documents`, also those answered
by a run of another batch), what was paid and which results are stored; Redis says where each
run's jobs stand. Job records in Redis expire (PIPELINE_RESULT_TTL_S): a job without one is
read from the ledger's `jobs` row instead.

The ledger side is tasks/batch_ledger.py (plain blocking SQL); `batch_view`
gathers both sides.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from pipeline.ledger.recorder import result_provider
from pipeline.ledger.report import WASTED
from pipeline.llm.offline.pages import OCR_NOTE, describe_pages
from pipeline.money import dollars
from tasks.batch_ledger import (
    Call,
    LedgerFacts,
    find_batch,
    in_run,
    last_call_error,
    read_ledger,
    recent_batches,
    resolve_batch,
    usd,
)
from tasks.batch_wait import groups_seen
from tasks.budget_stop import BudgetStop, budget_stop
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

# Read by the CLI, the API and the dashboard through this module, the batch view's.
__all__ = ["BatchView", "DocumentRow", "batch_view", "last_call_error", "read_runs",
           "recent_batches", "resolve_batch", "usd"]

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
    """Which queues a live worker serves, which workers beat (a job leased to another is
    lost), and the models paused or out of daily quota."""
    from pipeline.llm.limiter import Limiter

    workers = await client.workers()
    served = {q for w in workers if w.get("state", "running") == "running" for q in w["queues"]}
    around = Surroundings(served_queues=served, live_workers={str(w["id"]) for w in workers},
                          now_ms=int(time.time() * 1000))  # fmt: skip
    models = {j.model for r in runs for j in r.jobs() if j.state == "queued" and j.model}
    limiter = Limiter(client.redis, client.keys, client.settings)
    for model in sorted(models):
        state = await limiter.state(model)
        if state["daily_exhausted_until"]:
            around.quota_until[model] = state["daily_exhausted_until"]
        if state["paused_until"]:
            around.paused_until[model] = state["paused_until"]
    around.groups = await groups_seen(client, runs)
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
    cost: Decimal  # what this batch paid for it: the documents' costs sum to its spend
    wasted: Decimal  # the part of `cost` that bought nothing
    result: Any
    paid_in: list[str] = field(default_factory=list)  # other batches its run's calls were paid in
    paid_elsewhere: Decimal = Decimal(0)  # what those batches paid: not in `cost`
    run: Run | None = None
    mode: dict[str, Any] | None = None  # tasks/modes.py's choice (batch_fallback.annotate)
    # who each call of its current run asked, oldest first (ledger rows; "" before 0006)
    asked: list[str] = field(default_factory=list)
    held: Decimal = Decimal(0)  # its run's calls in flight: their worst case, not yet spent
    # this batch's calls for it still in flight (`started`): their worst case, held, not in
    # `cost` (a Batch Mode request's too, whichever job its row names)
    unsettled: Decimal = Decimal(0)

    @property
    def status(self) -> str:
        return self.state.status

    @property
    def reason(self) -> str | None:
        if self.state.status == "cancelled":
            return f"{self.state.reason}; {self._cost_words()}"
        if self.state.status != "complete":
            return self.state.reason
        said = [w for w in (self.unread, self._reused()) if w]
        return "; ".join(said) if said else self.state.reason

    def _cost_words(self) -> str:
        """What a document that ended without a result cost this batch: what its calls were
        billed, and the worst case of those still in flight (booked when they end)."""
        said = f"{dollars(self.cost)} spent on it" if self.cost else "nothing spent on it"
        if self.unsettled:
            said += (f", {dollars(self.unsettled)} held for its calls in flight (their worst "
                     "case; booked at their bill when they end)")  # fmt: skip
        return said

    def _reused(self) -> str | None:
        if not self.paid_in:
            return None
        where = ", ".join(b[:12] for b in self.paid_in)
        return (f"answered by a run paid in batch {where} "
                f"({dollars(self.paid_elsewhere)}, not paid again)")

    @property
    def unread(self) -> str | None:
        """What of a complete document nobody read ("not read: no text layer (a scan; …)",
        or "page 3 not read: …" for some of its pages), None when every page was read.

        The offline analyzer cannot read a page without a text layer (no OCR), so its result
        is stored and the document is `complete`, with nothing analysed on those pages: every
        view says so beside the state, never only `pipeline results`. Gemini reads such
        pages as images, so its results never carry this."""
        if self.state.status != "complete" or result_provider(self.result) != "offline":
            return None
        runs = self.result.get("pages_without_text") or []
        blank = sorted({n for run in runs for n in range(int(run[0]), int(run[-1]) + 1)})
        if not blank:
            return None
        total = self.pages or int(self.result.get("page_count") or 0)
        which = "" if len(blank) >= total else f"{describe_pages(blank)} "
        return f"{which}not read: no text layer (a scan; {OCR_NOTE})"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "document_id": self.document_id,
            "status": self.status,
            "reason": self.reason,
            "pages": self.pages,
            "cost_usd": usd(self.cost),  # this batch's: the documents' sum is spend_usd
            "wasted_usd": usd(self.wasted),
            # what other batches paid for the run answering here (a result reused): not in
            # cost_usd, so no sum across batches counts it twice
            "paid_elsewhere_usd": usd(self.paid_elsewhere),
            # calls in flight (not in cost_usd): their worst case, held against budgets, as
            # `pipeline costs` counts them; settled when they end or their lease runs out
            "held_usd": usd(self.held),
            "result": self.result,
            "mode": self.mode,
        }


@dataclass
class BatchView:
    """A batch as `pipeline status BATCH --json` and `GET /batches/{id}` show it."""

    facts: LedgerFacts
    documents: list[DocumentRow]
    note: str = ""  # about the choice of batch (a label several carry), for people
    budget_stop: BudgetStop | None = None  # an overrun stopped its budget (tasks/budget_stop.py)

    @property
    def held(self) -> Decimal:
        """The documents' calls in flight: their worst case, held, not in the spend."""
        return sum((d.held for d in self.documents), Decimal(0))

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
            "held_usd": usd(self.held),  # calls in flight, not in spend_usd
            "budget_usd": None if f.budget_usd is None else usd(f.budget_usd),
            # null while the budget admits calls; after an overrun, the stop and what lifts it
            "budget_stop": None if self.budget_stop is None else self.budget_stop.as_json(),
            "waiting": self.waiting(),
            # which batch a label several carry stands for, and how to name another
            "note": self.note or None,
        }


def document_rows(facts: LedgerFacts, runs: dict[str, Run], around: Surroundings) -> list[
        DocumentRow]:  # fmt: skip
    """Each member's state, cost and result. A document's cost is what this batch paid for
    it (so the costs sum to the batch's spend); what its current run cost in other batches,
    or the earlier run whose stored result answers it, is its `paid_elsewhere`."""
    by_doc: dict[str, list[Call]] = {}
    for call in facts.calls:
        by_doc.setdefault(call.document_id or "", []).append(call)
    rows = []
    for m in facts.members:
        run = runs.get(m.job_id or "") or Run(None)
        has_result = m.document_id in facts.results
        state = derive(run, has_result, around)
        calls = [c for c in by_doc.get(m.document_id, [])
                 if c.batch_id == facts.batch_id or in_run(c, m.job_id)]  # fmt: skip
        # In flight: this batch's calls for it and its run's, each once (a call has one
        # document), whichever job's id its row carries; never in `cost` (batch_ledger.Call).
        held = sum((c.held for c in calls), Decimal(0))
        if not calls and has_result:
            calls = by_doc.get(m.document_id, [])
        paid_in = sorted({c.batch_id for c in calls if c.batch_id and c.cost
                          and c.batch_id != facts.batch_id})  # fmt: skip
        here = [c for c in calls if c.batch_id == facts.batch_id]
        rows.append(DocumentRow(
            m.name, m.document_id, m.pages, m.job_id, state,
            sum((c.cost for c in here), Decimal(0)),
            sum((c.cost for c in here if c.outcome in WASTED), Decimal(0)),
            facts.results.get(m.document_id), paid_in,
            sum((c.cost for c in calls if c.batch_id != facts.batch_id), Decimal(0)), run,
            # its batch answer too (a row from before Batch Mode rows named their own
            # document's job names the member's job that collected the group)
            asked=[c.provider for c in calls if in_run(c, m.job_id)
                   or (c.mode == "batch" and c.batch_id == facts.batch_id)],
            held=held,
            unsettled=sum((c.held for c in here), Decimal(0)),
        ))  # fmt: skip
    return rows


def paid_elsewhere(view: BatchView) -> Decimal:
    """What other batches paid for the runs answering `view`'s documents (results reused
    from earlier runs): the sum of the documents' `paid_elsewhere`, never in the spend."""
    return sum((d.paid_elsewhere for d in view.documents), Decimal(0))


async def batch_view(client: QueueClient, engine: Engine, ref: str,
                     changing: str = "") -> BatchView:  # fmt: skip
    """The batch `ref` names (id, prefix or label: tasks/batch_ledger.find_batch, whose note
    it keeps; `changing` as there), every document's state derived now."""
    found = await asyncio.to_thread(find_batch, engine, ref, changing)
    facts = await asyncio.to_thread(read_ledger, engine, found.batch_id)
    roots = [m.job_id for m in facts.members if m.job_id]
    runs = await read_runs(client, roots, facts.jobs)
    around = await surroundings(client, list(runs.values()))
    for call in facts.calls:
        if call.held and call.job_id:
            around.held_usd[call.job_id] = around.held_usd.get(call.job_id, Decimal(0)) + call.held
    rows = document_rows(facts, runs, around)
    await annotate_modes(client, rows)
    refused = [d.state.job_id for d in rows if d.status == "over_budget" and d.state.job_id]
    return BatchView(facts, rows, found.note, await budget_stop(client, facts, refused))
