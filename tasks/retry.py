"""Retrying a batch: each failed, over-budget (or cancelled) document gets a new run in the
batch, under the batch's current budget (tasks/runs.py), in the mode it was submitted in
(`kept_mode`: Batch Mode documents share a new Gemini batch group, or the retry says why
not). The CLI (`pipeline retry`), the API (`POST /batches/{id}/retry`) and the dashboard's
Retry button call `retry_batch`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from pipeline.ledger.recorder import SqlRecorder
from pipeline.llm.factory import provider_kind
from pipeline.queue.client import QueueClient
from pipeline.words import counted
from tasks.batches import BatchView, batch_view

if TYPE_CHECKING:
    from pipeline.settings import Settings

@dataclass
class Retried:
    name: str
    document_id: str
    status: str  # queued (a new run) | duplicate (a newer run answers) | skipped
    job_id: str | None = None
    reason: str | None = None
    # The new run's mode ("batch": in a Gemini batch job of the retried documents;
    # "interactive"), None when no run was queued; `mode_note` says why a document submitted
    # in Batch Mode is not retried in it (its deadline), or that its mode is not recorded
    # (its record expired), else None.
    mode: str | None = None
    mode_note: str | None = None


def retry_states(failed: bool, over_budget: bool) -> set[str]:
    """Which document states a retry takes: the flags given, or without any, every state that
    ended without a result (failed, over_budget, cancelled)."""
    if not failed and not over_budget:
        return {"failed", "over_budget", "cancelled"}
    return {s for s, on in (("failed", failed), ("over_budget", over_budget)) if on}


async def retry_batch(client: QueueClient, recorder: SqlRecorder, engine: Engine, ref: str,
                      states: set[str], document_ids: set[str] | None = None) -> tuple[
                          BatchView, list[Retried]]:  # fmt: skip
    """A new run, in the batch, under its current budget, for each document in `states`
    (only those of `document_ids` when given), in the mode it was submitted with
    (`kept_mode`): the documents retried in Batch Mode share new Gemini batch groups, one per
    model and provider, as a submission's do, so they are paid at the batch rate again."""
    view = await batch_view(client, engine, ref, changing="retry")
    docs = [doc for doc in view.documents if doc.status in states
            and (document_ids is None or doc.document_id in document_ids)]  # fmt: skip
    prepared = [await _prepare_retry(client, view, doc) for doc in docs]
    ready = [p for p in prepared if isinstance(p, _Retry)]
    await _propose_groups(client, _group_batched(ready, view.facts.batch_id))
    out = []
    for p in prepared:
        out.append(p if isinstance(p, Retried) else await _enqueue_retry(client, recorder,
                                                                         view, p))  # fmt: skip
    await _seal_groups(client, ready, out)
    return view, out


async def _seal_groups(client: QueueClient, ready: list[_Retry], out: list[Retried]) -> None:
    """Say which documents each Gemini batch group of the retry is made of, once every run
    is enqueued (pipeline/llm/batch_group.seal): those queued in it, never one a newer run
    took over meanwhile ("duplicate": it answers for it; in the batch job too, it would be
    paid twice). The groups' members wait for this before building them."""
    from pipeline.llm.batch_group import seal

    queued = {r.document_id for r in out if r.status == "queued"}
    groups: dict[str, list[str]] = {}
    for r in ready:
        if r.spec.batch_group:
            sealed = groups.setdefault(str(r.spec.batch_group["name"]), [])
            if r.spec.sha256 in queued:
                sealed.append(r.spec.sha256)
    for name, documents in groups.items():
        await seal(client.redis, client.keys, name, documents)


def kept_mode(mode: dict[str, Any] | None, s: Settings,
              now: datetime | None = None) -> tuple[dict[str, str] | None, str | None]:  # fmt: skip
    """The job arguments that record a retried document's mode (tasks/modes.ModeChoice.args),
    from its last run's (`mode`: tasks/status._mode's shape, None when that run's record is
    gone or had no mode), and why Batch Mode is not kept when it was the mode: Batch Mode
    stays, deadline and all, unless the deadline's fallback time (deadline less
    PIPELINE_BATCH_FALLBACK_MARGIN_S) has passed, as a submission would refuse it then
    (tasks/modes.choose_mode): the retry then runs interactively, at the interactive price,
    and says so. A run whose mode is not known any more (its job record expired) is retried
    in PIPELINE_MODE's, as a submit without `--mode` would be, and says that too (it may
    have been submitted in Batch Mode). Returns (args or None, the note or None)."""
    from tasks.modes import choose_mode, due, fallback_at

    if not mode or not mode.get("mode"):
        # Not choice.why: its advice ("--mode chooses another") is a submit's; a retry takes
        # no mode, from the CLI or the API.
        choice = choose_mode(s.mode, None, s, now, asked=False)
        note = (f"its mode is not recorded (its job record has expired, or was made before "
                f"modes were), so it runs in "
                f"{choice.mode}, the mode PIPELINE_MODE ({s.mode}) gives a submission that "
                "names none")  # fmt: skip
        return {**choice.args(), "mode_why": note}, note
    args = {"mode": str(mode["mode"]), "mode_requested": str(mode.get("requested") or
                                                             mode["mode"]),
            "mode_why": str(mode.get("why") or "")}  # fmt: skip
    if mode.get("deadline"):
        args["deadline"] = str(mode["deadline"])
    if args["mode"] != "batch" or due(args, s, now) != 0:
        return args, None
    now = now or datetime.now(UTC)
    deadline = datetime.fromisoformat(args["deadline"])
    when = deadline.isoformat(timespec="minutes")
    if deadline <= now:
        why = f"its deadline {when} has passed"
    else:
        why = (f"its deadline {when} is {(deadline - now).total_seconds() / 3600:.1f} h away, "
               f"and documents leave Batch Mode {s.batch_fallback_margin_s / 3600:g} h before "
               f"their deadline (PIPELINE_BATCH_FALLBACK_MARGIN_S, from "
               f"{fallback_at(deadline, s).isoformat(timespec='minutes')})")  # fmt: skip
    note = (f"submitted in Batch Mode, retried interactively at the interactive price (twice "
            f"the batch rate): {why}")  # fmt: skip
    return {**args, "mode": "interactive", "mode_why": note}, note


@dataclass
class _Retry:
    """A document about to be retried: its run (bytes held under `spec.job_id`), the mode
    kept and why it was not (`kept_mode`)."""

    doc: Any
    spec: Any  # tasks.runs.RunSpec
    note: str | None


async def _prepare_retry(client: QueueClient, view: BatchView, doc: Any) -> _Retry | Retried:
    """The document's new run, its bytes held for it; a Retried "skipped" when they are gone
    from the document store."""
    from pipeline.ledger.batch_limit import current_limit
    from pipeline.llm.pricing import canonical_model
    from pipeline.storage import open_store
    from pipeline.storage.holds import hold, release
    from tasks.plan import analyze_prompt
    from tasks.runs import RunSpec

    facts = view.facts
    member = next(m for m in facts.members if m.document_id == doc.document_id)
    s = client.settings
    limit = await current_limit(client.redis, client.keys, facts.batch_id) or facts.budget_usd
    mode_args, note = kept_mode(doc.mode, s)
    spec = RunSpec(
        doc.document_id, doc.name, int(member.pages or 1), int(member.size_bytes or 0),
        member.model or canonical_model(client.settings.model), analyze_prompt().version,
        facts.batch_id, provider_kind(client.settings), limit, mode_args=mode_args,
    )  # fmt: skip
    store = open_store(s)
    held = bool(await client.redis.exists(client.keys.document(spec.sha256)))
    # Held before the bytes are looked for, so a job of it completing meanwhile keeps them.
    await hold(client.redis, client.keys, [spec.job_id], spec.sha256, s.document_retention_s)
    if not await asyncio.to_thread(store.exists, spec.sha256):
        await release(client.redis, client.keys, store, spec.job_id, [spec.sha256])
        return Retried(doc.name, doc.document_id, "skipped", doc.job_id,
                       _gone(store.where, held, s.document_retention_s))  # fmt: skip
    return _Retry(doc, spec, note)


def _group_batched(ready: list[_Retry], batch_id: str) -> dict[str, list[dict[str, str]]]:
    """Put the runs kept in Batch Mode in Gemini batch groups, one per model, prompt and
    provider, as a submission does (tasks/submission.submit_uploads): each group is reserved
    and answered as one batch job (tasks/batch_mode.py). A group's name is new to this retry
    (`group_name`'s `run`): the earlier run's group may have a batch job already, cancelled
    or booked, whose record would send these documents to the interactive path. Returns
    each group's members (name -> [{"sha256", "name", "job_id"}]) for its record."""
    from dataclasses import replace

    from pipeline.llm.batch_items import group_name

    kinds: dict[tuple[str, str, str], list[_Retry]] = {}
    proposed: dict[str, list[dict[str, str]]] = {}
    for r in ready:
        if (r.spec.mode_args or {}).get("mode") == "batch":
            kinds.setdefault((r.spec.model, r.spec.prompt_version, r.spec.provider),
                             []).append(r)  # fmt: skip
    for (model, version, provider), runs in kinds.items():
        # Each member names its new run's job: its request's ledger row is that job's
        # (tasks/batch_mode.py), whichever member submits or collects the group.
        members = [{"sha256": r.spec.sha256, "name": r.spec.name, "job_id": r.spec.job_id}
                   for r in runs]  # fmt: skip
        run = f"{batch_id} retry " + " ".join(sorted(r.spec.job_id for r in runs))
        # Its jobs carry its name alone; the members are said once, in its record
        # (`_propose_groups`, before the enqueue).
        group = {"name": group_name(model, version, [m["sha256"] for m in members], provider,
                                    run=run)}  # fmt: skip
        proposed[group["name"]] = members
        for r in runs:
            r.spec = replace(r.spec, batch_group=group)
    return proposed


async def _propose_groups(client: QueueClient, proposed: dict[str, list[dict[str, str]]]) -> None:
    """Write each Batch Mode group's members in its Redis record before any of its jobs is
    queued (pipeline/llm/batch_group.propose)."""
    from pipeline.llm.batch_group import propose

    for name, members in proposed.items():
        await propose(client.redis, client.keys, name, members)


async def _enqueue_retry(client: QueueClient, recorder: SqlRecorder, view: BatchView,
                         r: _Retry) -> Retried:  # fmt: skip
    from pipeline.storage import open_store
    from pipeline.storage.holds import release
    from tasks.resubmission import ended_words
    from tasks.runs import enqueue_run

    facts, doc, spec = view.facts, r.doc, r.spec
    handle = await enqueue_run(client, spec, replacing=doc.job_id)
    if not handle.created:  # a newer run started elsewhere answers for it: show that one
        # The id held for the new run never became a job: it holds the bytes no longer.
        await release(client.redis, client.keys, open_store(client.settings), spec.job_id,
                      [spec.sha256])  # fmt: skip
        await recorder.add_to_batch(facts.batch_id, doc.document_id, job_id=handle.id)
        return Retried(doc.name, doc.document_id, "duplicate", handle.id,
                       f"another run (job {handle.id}) answers for it already")  # fmt: skip
    await recorder.upsert_job(handle.id, batch_id=facts.batch_id, document_id=doc.document_id)
    await recorder.add_to_batch(facts.batch_id, doc.document_id, job_id=handle.id,
                                model=spec.model, prompt_version=spec.prompt_version,
                                provider=spec.provider)  # fmt: skip
    mode = "batch" if spec.batch_group else "interactive"
    return Retried(doc.name, doc.document_id, "queued", handle.id,
                   f"was {ended_words(doc.status, doc.reason)}", mode, r.note)  # fmt: skip


def _gone(where: str, held: bool, retention_s: int) -> str:
    """Why a document to retry has no bytes, from whether a job still held it: a held
    document's bytes are never removed by the pipeline (pipeline/storage/holds.py)."""
    if held:
        return (f"its PDF is not in the document store at {where}, though a job still holds "
                "it, so no clean-up of this key prefix removed it: it was deleted from outside "
                "(by hand, or by a version before 2026-11-30 under another key prefix) or never "
                "stored there; submit the file again")  # fmt: skip
    days, rest = divmod(retention_s, 86400)
    kept = f"{counted(days, 'day')}" if days and not rest else f"{retention_s} s"
    return (f"its PDF is no longer in the document store at {where}: no job had held it for "
            f"PIPELINE_DOCUMENT_RETENTION_S ({kept}), so the retention sweep removed it; "
            "submit the file again")  # fmt: skip
