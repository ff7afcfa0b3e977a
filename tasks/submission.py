"""Turning uploaded PDFs into analysis jobs: the one front door for the CLI and the HTTP API.

Everything that must hold for every submission lives here so both surfaces get it: the model
is checked before anything is enqueued; each PDF is inspected before it costs anything; the
bytes go to the document store (pipeline/storage/) and only the sha256 travels in the job;
and the idempotency key is the content hash, so the same file sent twice — even renamed — is
the same job and runs once (what a second submission says: tasks/resubmission.py). A
submission of thousands of files costs a few round trips and commits, not a few per file:
holds, jobs (enqueue_many) and ledger rows go in bulk, and what each document's answer means
is still decided one by one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pipeline.errors import BadDocument, InputError
from pipeline.ledger.budget import check_budget_usd
from pipeline.llm.factory import provider_kind
from pipeline.llm.pricing import PriceTable, canonical_model
from pipeline.queue.client import QueueClient
from pipeline.queue.job import parse_priority
from tasks.budget_warning import counter, over_budget_warnings
from tasks.resubmission import resubmitted
from tasks.runs import ANALYZE_TASK

__all__ = ["ANALYZE_TASK", "DocOutcome", "Submission", "Upload", "counts_with_provider",
           "estimate", "estimate_counted", "refusals", "submit_uploads"]

if TYPE_CHECKING:
    from pipeline.services import Services
    from pipeline.settings import Settings
    from tasks.modes import ModeChoice


@dataclass
class Upload:
    """One file as received; `name` is for people, the content hash identifies it. `path`,
    when set, is a file holding the same bytes (another process can read it from there)."""

    name: str
    data: bytes
    path: str | None = None


# How a submission inspects one upload: (upload, settings, model) -> (pages, sha256),
# raising BadDocument. The default runs `_inspect` in a thread; the HTTP API passes its
# bounded, limited process pool (pipeline/api/inspection.py).
Inspector = Callable[[Upload, "Settings", str], Awaitable[tuple[int, str]]]


@dataclass
class DocOutcome:
    name: str
    status: str  # "queued" (a new run in this batch) | "duplicate" | "skipped"
    job_id: str | None = None
    document_id: str | None = None
    reason: str | None = None
    pages: int | None = None
    sha256: str | None = None


@dataclass
class Submission:
    batch_id: str | None  # None when every file was refused: no batch was made
    documents: list[DocOutcome]
    warnings: list[str] = field(default_factory=list)
    model: str = ""
    prompt_version: str = ""
    mode: str = "interactive"  # what the documents run in (tasks/modes.py), and why
    mode_why: str = ""
    deadline: str | None = None  # ISO 8601 UTC
    provider: str = ""  # who will answer: "gemini", "emulator" or "offline" (provider_kind)

    @property
    def job_ids(self) -> list[str]:
        return [d.job_id for d in self.documents if d.job_id]

    @property
    def made(self) -> str:
        """The batch id of a submission that queued something; ValueError when it queued
        nothing and so made no batch."""
        if self.batch_id is None:
            raise ValueError("nothing was queued: no batch was made")
        return self.batch_id

    @property
    def queued(self) -> int:
        return sum(d.status == "queued" for d in self.documents)

    @property
    def answered_by(self) -> str:
        """Who will answer, in the words of `submit`'s header: the model, unless it is the
        offline analyzer (the model is then only part of the documents' keys) or the
        emulator."""
        if self.provider == "offline":
            return "offline analyzer ($0, not Gemini)"
        if self.provider == "emulator":
            return f"{self.model} on the emulator (priced, never billed)"
        return self.model

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "model": self.model,
            "prompt_version": self.prompt_version,
            "documents": [asdict(d) for d in self.documents],
            "warnings": list(self.warnings),
            "mode": self.mode,
            "mode_why": self.mode_why,
            "deadline": self.deadline,
            "provider": self.provider,
            "answered_by": self.answered_by,
        }


def _priority(value: int | str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_priority(value)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def _inspect(upload: Upload, s: Settings, model: str) -> tuple[int, str]:
    """tasks/pdf.py's validity rule (the worker applies the same): BadDocument, or
    RequestTooLarge for a page no inline request can carry."""
    from tasks.pdf import inspect_pdf
    from tasks.plan import analyze_prompt, part_room_bytes

    room = part_room_bytes(model, analyze_prompt(), upload.name, s.max_inline_request_bytes)
    info = inspect_pdf(upload.data, s.max_upload_bytes, s.max_document_pages, upload.name, room)
    return info.page_count, info.sha256


async def _inspect_in_thread(upload: Upload, s: Settings, model: str) -> tuple[int, str]:
    return await asyncio.to_thread(_inspect, upload, s, model)


def refusals(
    s: Settings, prices: PriceTable, model: str | None, budget_usd: Decimal | None,
    mode: str | None, deadline: datetime | str | None, billed: bool, now: datetime,
    *, collect: bool = False,
) -> tuple[str, ModeChoice, list[InputError]]:  # fmt: skip
    """Every refusal a submission makes before it stores anything; `pipeline submit
    --dry-run` asks the same, so a dry run says what the real submit would refuse.

    Returns (the canonical model, the mode chosen, the refusals). Raises UnknownModel for a
    model without a price (nothing can be priced then) and BadDeadline for a deadline that
    cannot be read; the others are the refusals: InputError (an amount the budget rule
    refuses), DeadlineTooShort, and BudgetTooSmall when `billed` (the offline analyzer costs
    $0) and the budget cannot pay for one call. Without `collect` the first is raised, as a
    submission does; with it every one is returned, each checked as far as the others allow.
    """
    from pipeline.errors import DeadlineTooShort
    from tasks.modes import ModeChoice, choose_mode, parse_deadline
    from tasks.plan import check_budget_fits_a_call

    model = canonical_model(model or s.model, prices)  # UnknownModel before anything else
    found: list[InputError] = []
    try:
        if budget_usd is not None:
            check_budget_usd(budget_usd)
    except InputError as exc:
        found.append(exc)
        budget_usd = None
    at = parse_deadline(deadline) if isinstance(deadline, str) else deadline
    try:
        choice = choose_mode(mode or s.mode, at, s, now, asked=mode is not None)
    except DeadlineTooShort as exc:
        found.append(exc)
        choice = ModeChoice("batch", "batch", at, str(exc))  # what was asked, to price it
    if budget_usd is not None and billed:
        try:
            check_budget_fits_a_call(budget_usd, prices, model, now,
                                     batch=choice.mode == "batch")  # fmt: skip
        except InputError as exc:
            found.append(exc)
    if found and not collect:
        raise found[0]
    return model, choice, found


async def submit_uploads(
    client: QueueClient,
    uploads: list[Upload],
    *,
    model: str | None = None,
    budget_usd: Decimal | None = None,
    priority: int | str | None = None,
    label: str | None = None,
    batch_id: str | None = None,
    services: Services | None = None,
    expected_duration_s: float | None = None,
    queue: str | None = None,
    inspector: Inspector | None = None,
    mode: str | None = None,
    deadline: datetime | str | None = None,
) -> Submission:
    """Validate, store and enqueue one analysis job per usable PDF.

    Raises UnknownModel (nothing enqueued) for a model without a price, BudgetTooSmall
    (nothing enqueued) for a budget below what any one paid call reserves; a document whose
    estimated worst case alone passes the budget is queued with a warning. Bad PDFs come
    back as "skipped" outcomes with the reason, so one bad file never sinks a batch. The
    model is used under its canonical id ("models/x" is x), so every spelling of it makes
    the same job, the same call and the same bucket.
    `expected_duration_s` overrides the task's own estimate, and so the lease (2x it) that
    decides how soon a job held by a killed worker runs again. `queue` routes the jobs to a
    queue other than the task's own (served by `pipeline worker --queue NAME`). `inspector`
    replaces how each PDF is inspected (see `Inspector`).
    `mode` (default PIPELINE_MODE): "batch" answers the documents with one Gemini batch job
    per submission at half the price (tasks/batch_mode.py), "auto" chooses by `deadline`
    (a datetime, or text as `--deadline` takes it) by tasks/modes.py's rule; ValueError for
    another mode, BadDeadline / DeadlineTooShort (nothing enqueued) for a deadline refused.
    """
    from pipeline.ledger.batch_limit import set_limit
    from pipeline.ledger.writes import Entry, batch_member_entry, document_entry, job_entry
    from pipeline.storage import open_store
    from pipeline.storage.holds import hold_many, release
    from tasks.plan import analyze_prompt
    from tasks.runs import RunSpec, enqueue_runs

    s = client.settings
    prices = services.prices if services is not None else PriceTable.load()
    prio = _priority(priority)
    # Who answers: the provider given with `services` (the API's, `pipeline run`'s), else
    # the one these settings make (a worker started with them).
    provider = services.caller.provider.name if services is not None else provider_kind(s)
    # the offline analyzer costs $0: no budget is too small for it
    billed = services.caller.billed if services is not None else provider != "offline"
    now = datetime.now(UTC)
    model, choice, _ = refusals(s, prices, model, budget_usd, mode, deadline, billed, now)
    warnings = prices.check_model(model)
    prompt = analyze_prompt()
    batch_id = batch_id or uuid.uuid4().hex
    submission = Submission(batch_id, [], warnings, model, prompt.version, choice.mode,
                            choice.why, choice.args().get("deadline"), provider)  # fmt: skip

    # Outcomes come back in upload order, so callers can zip them with what they sent.
    outcomes: dict[int, DocOutcome] = {}
    checked: list[tuple[int, Upload, int, str]] = []
    for index, upload in enumerate(uploads):
        try:
            pages, sha = await (inspector or _inspect_in_thread)(upload, s, model)
        except BadDocument as exc:
            outcomes[index] = DocOutcome(upload.name, "skipped", reason=str(exc))
            continue
        checked.append((index, upload, pages, sha))
    if not checked:  # nothing to queue: no batch is made, so none is named
        submission.documents = [outcomes[i] for i in sorted(outcomes)]
        submission.batch_id = None
        return submission
    used = None
    if budget_usd is not None and billed:
        from pipeline.ledger.budget import Budget

        # A batch named by the caller (the API's idempotent retry) may have spent already:
        # read before its documents are queued, whose calls may hold some of it soon after.
        now_in = (await Budget(client.redis, client.keys, s).status(batch_id))["batch"]
        used = now_in.spent_usd + now_in.reserved_usd

    # Each document's root job id, chosen now: a Batch Mode group names its members' jobs,
    # so each request's ledger row is its own document's job's, whichever member submits
    # or collects the group (tasks/batch_mode.py).
    job_ids = [uuid.uuid4().hex for _ in checked]
    group: dict[str, Any] | None = None
    if choice.mode == "batch":
        from pipeline.llm.batch_items import group_name

        members = [{"sha256": sha, "name": up.name, "job_id": job_id}
                   for (_, up, _, sha), job_id in zip(checked, job_ids, strict=True)]
        # Named for this batch too: a resubmission of documents whose earlier batch's group
        # has a batch job (cancelled, booked) makes a group of its own, not that one's record.
        # Its jobs carry its name alone; the members are said once, in its record (below).
        group = {"name": group_name(model, prompt.version, [m["sha256"] for m in members],
                                    provider, run=batch_id)}  # fmt: skip
    engine = None
    if services is not None:
        recorder = services.recorder
    else:
        from pipeline.ledger.db import get_engine
        from pipeline.ledger.recorder import SqlRecorder

        engine = await asyncio.to_thread(get_engine, s)
        recorder = SqlRecorder(engine, client.redis, client.keys)
    try:
        await recorder.upsert_batch(batch_id, label=label, budget_usd=budget_usd, status="open")
        if budget_usd is not None:
            await set_limit(client.redis, client.keys, batch_id, budget_usd)
        store = open_store(s)
        specs = [RunSpec(sha, upload.name, pages, len(upload.data), model, prompt.version,
                         batch_id, provider, budget_usd, prio, expected_duration_s, queue,
                         job_id=job_id, batch_group=group, mode_args=choice.args())
                 for (_, upload, pages, sha), job_id in zip(checked, job_ids,
                                                           strict=True)]  # fmt: skip
        if group is not None:
            from pipeline.llm.batch_group import propose

            # Before the enqueue: a member reads the group's documents from its record.
            await propose(client.redis, client.keys, group["name"], members)
        # Held before the put, so a job of the same document ending meanwhile cannot see no
        # holder and delete the bytes just put; a resubmission puts them again.
        await hold_many(client.redis, client.keys, [(sp.job_id, sp.sha256) for sp in specs],
                        s.document_retention_s)  # fmt: skip
        await asyncio.gather(*(asyncio.to_thread(store.put, sha, upload.data)
                               for _, upload, _, sha in checked))  # fmt: skip
        await recorder.write_many([document_entry(sha, file_name=upload.name, pages=pages,
                                                   size_bytes=len(upload.data))
                                   for _, upload, pages, sha in checked])  # fmt: skip
        # All first runs in one round trip per thousand; what each answer means is decided
        # per document below, exactly as one by one.
        handles = await enqueue_runs(client, specs)
        rows: list[Entry] = []
        for (index, upload, pages, sha), spec, handle in zip(checked, specs, handles,
                                                             strict=True):  # fmt: skip
            job_id, reason = handle.id, None
            if handle.created:
                status = "queued"
            else:
                status, job_id, reason = await resubmitted(client, recorder, handle.id, spec)
            if job_id != spec.job_id:
                # The id held above never became a job (an earlier run answers): a duplicate
                # of a finished run leaves no holder, and the bytes just put go again.
                await release(client.redis, client.keys, store, spec.job_id, [sha])
            if status == "queued":
                # No status here: a fast worker may already have finished the job, and
                # job_upsert leaves fields it is not given untouched.
                rows.append(job_entry(job_id, batch_id=batch_id, document_id=sha))
            rows.append(batch_member_entry(batch_id, sha, job_id=job_id, name=upload.name,
                                           model=model, prompt_version=prompt.version,
                                           provider=provider))  # fmt: skip
            outcomes[index] = DocOutcome(upload.name, status, job_id, sha, reason, pages, sha)
        if group is not None:
            from pipeline.llm.batch_group import seal

            # Now that each answer is known: the group's batch job carries the documents
            # whose runs are in it alone, never a duplicate another run answers (paid twice,
            # else). Its members wait for this before building it (batch_mode._documents).
            await seal(client.redis, client.keys, group["name"],
                       await _in_group(client, group["name"], list(outcomes.values())))
        await recorder.write_many(rows)
    finally:
        if engine is not None:
            await asyncio.to_thread(engine.dispose)
    submission.documents = [outcomes[i] for i in sorted(outcomes)]
    # What the budget means for the documents queued here alone: a duplicate is answered by
    # another run, sent and reserved by none of this batch's calls (its Batch Mode group
    # leaves it out), so it is in no figure of these words.
    runs = [c for c in checked if outcomes[c[0]].status == "queued"]
    if used is not None and budget_usd is not None and runs:
        async with counter(client, services, s) as count:
            submission.warnings.extend(await over_budget_warnings(
                runs, budget_usd, prices, model, s, choice.mode == "batch", batch_id[:12],
                now, count, used))  # fmt: skip
    return submission


async def _in_group(client: QueueClient, name: str, outcomes: list[DocOutcome]) -> list[str]:
    """The documents (sha256) whose runs carry the Batch Mode group `name`: those queued
    here, and a duplicate answered by a run of this same group (the API's idempotent retry of
    a submission makes the same batch, so the same group, again)."""
    from pipeline.errors import JobNotFound

    out = []
    for d in outcomes:
        if d.sha256 is None or d.job_id is None or d.status == "skipped":
            continue
        if d.status == "duplicate":
            try:
                job = await client.get(d.job_id)
            except JobNotFound:
                continue
            args = job.args[0] if job.args and isinstance(job.args[0], dict) else {}
            if (args.get("batch_group") or {}).get("name") != name:
                continue  # another run answers it: not sent, held or booked here
        out.append(d.sha256)
    return out


# The dry run lives in tasks/estimate.py; imported here for the callers of this front door.
from tasks.estimate import counts_with_provider, estimate, estimate_counted  # noqa: E402
