"""Steering a batch: cancel it (or one job), change its budget, retry what ended without a
result. The CLI (`pipeline cancel|budget|retry`) and the API (`POST /batches/{id}/cancel`,
`PATCH /batches/{id}`, `POST /batches/{id}/retry`, `POST /jobs/{id}/cancel`) call these.

- Cancel: a job not yet running ends `cancelled` at once; a running one is flagged and its
  worker stops it within a liveness tick (pipeline/queue/liveness.py, about a second), and
  a call it has in flight is booked `abandoned` at its worst case (possibly billed).
  Cancelling a long document's root cancels its parts and merge too. A batch's cancel
  leaves alone runs that belong to another batch (a document resubmitted here while that
  batch's run answers it). A document waiting
  in a Gemini batch job leaves it (tasks/batch_fallback.py); once every document of that job
  has left, the remote job is cancelled too, and what it answered anyway is booked, unused.
- Budget: the new figure is checked by the one budget rule, kept in Redis where every call
  reads it (pipeline/ledger/batch_limit.py) and in the ledger.
- Retry: each failed, over-budget (or cancelled) document gets a new run in the batch, under
  the batch's current budget (tasks/runs.py).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from pipeline.errors import JobNotFound
from pipeline.ledger.batch_limit import set_limit
from pipeline.ledger.budget import Budget, check_budget_usd
from pipeline.ledger.budget_words import admitting_usd
from pipeline.ledger.recorder import SqlRecorder
from pipeline.llm.factory import provider_kind
from pipeline.money import at_least_usd, dollars
from pipeline.queue.client import QueueClient
from pipeline.queue.liveness import tick_s
from pipeline.words import counted
from tasks.batch_fallback import CANCELLED, cancel_if_abandoned, leave
from tasks.batches import BatchView, batch_view, usd
from tasks.status import part_count, part_id, reduce_id

if TYPE_CHECKING:
    from pipeline.llm.provider import Provider
    from pipeline.settings import Settings

_NOT_ENDED = frozenset({"queued", "scheduled", "waiting", "active"})


@dataclass
class Cancelled:
    """What a cancel did: job id -> the state it is in now (cancelled, cancelling, or the
    terminal state it already had)."""

    target: str
    jobs: dict[str, str]
    skipped: list[str]  # documents whose run belongs to another batch
    batch_jobs: list[str] = field(default_factory=list)  # Gemini batch jobs asked to cancel
    note: str = ""  # about the choice of batch (tasks/batch_ledger.find_batch)

    @property
    def cancelled(self) -> int:
        return sum(s == "cancelled" for s in self.jobs.values())

    @property
    def cancelling(self) -> int:
        return sum(s == "cancelling" for s in self.jobs.values())

    def message(self, min_lease_s: float) -> str:
        """What the cancel did in words, as `pipeline status` will show it: jobs cancelled
        now, and running jobs asked to stop, which their workers do within a liveness tick
        of a lease as short as `min_lease_s` (queue/liveness.py)."""
        said = []
        if self.cancelled:
            said.append(f"{counted(self.cancelled, 'job')} cancelled")
        if self.cancelling:
            within = max(1, math.ceil(2 * tick_s(min_lease_s)))
            said.append(f"cancellation requested for {counted(self.cancelling, 'running job')}; "
                        f"their workers stop them within about {counted(within, 'second')} (a "
                        "call in flight is booked as abandoned)")  # fmt: skip
        return "; ".join(said) or "nothing to cancel: every job had ended"

    def as_json(self, min_lease_s: float) -> dict[str, Any]:
        # the message too: an empty answer would not say whether anything was left to cancel
        return {**asdict(self), "cancelled": self.cancelled, "cancelling": self.cancelling,
                "message": self.message(min_lease_s)}  # fmt: skip


async def _run_jobs(client: QueueClient, root_id: str) -> list[str]:
    """The run's jobs, merge and parts first (so none is released by the root's end)."""
    ids: list[str] = []
    try:
        root = await client.get(root_id)
    except JobNotFound:
        return ids
    from tasks.status import JobView

    n = part_count(JobView(root.id, root.state.value, result=root.result,
                           progress=root.progress))  # fmt: skip
    if n or await client.redis.exists(client.keys.job(reduce_id(root_id))):
        ids.append(reduce_id(root_id))
        ids += [part_id(root_id, i) for i in range(n)]
    return [*ids, root_id]


async def cancel_run(client: QueueClient, recorder: SqlRecorder | None, root_id: str,
                     left: dict[str, Any] | None = None) -> dict[str, str]:  # fmt: skip
    """Cancel every job of the run rooted at `root_id` that has not ended (`cancel_runs`)."""
    return await cancel_runs(client, recorder, [root_id], left)


async def cancel_runs(client: QueueClient, recorder: SqlRecorder | None, root_ids: list[str],
                      left: dict[str, Any] | None = None) -> dict[str, str]:  # fmt: skip
    """Cancel every job of the runs rooted at `root_ids` that has not ended: first every job
    not running, then the running ones flagged. A flag frees its worker's slot within a
    liveness tick and that worker claims its queue's next job, which, were the flags set
    first, could be one of these runs not reached yet: it would start, and could send a paid
    call, for a cancelled batch. A root waiting in a Gemini batch group then leaves it (after
    its cancel flag, so a look it makes meanwhile ends it rather than calling interactively);
    `left` collects such groups (name -> the root's arguments and batch) for `cancel_remote`."""
    out: dict[str, str] = {}
    groups = [await _batch_group_of(client, root_id) for root_id in root_ids]
    for running in (False, True):
        for root_id in root_ids:  # read again: a root may have queued its parts since
            for job_id in await _run_jobs(client, root_id):
                await _cancel_one(client, recorder, job_id, running, out)
    for group in groups:
        if group is None:
            continue
        # after the cancel flag: a look from now on stops, pays nothing
        args, batch = group
        name = str(args["batch_group"]["name"])
        if await leave(client.redis, client.keys, name, str(args["sha256"]), CANCELLED,
                       client.settings.document_retention_s) and left is not None:  # fmt: skip
            left[name] = (args, batch)
    return out


async def _cancel_one(client: QueueClient, recorder: SqlRecorder | None, job_id: str,
                      running: bool, out: dict[str, str]) -> None:  # fmt: skip
    """Cancel `job_id` into `out` unless it has ended, or runs while `running` is False (its
    turn comes once nothing of the cancel is left waiting for a worker)."""
    try:
        job = await client.get(job_id)
    except JobNotFound:
        return
    if job.state.value not in _NOT_ENDED or (job.state.value == "active" and not running):
        return
    out[job_id] = await client.cancel(job_id)
    if out[job_id] == "cancelled" and recorder is not None:
        # No worker settles a job cancelled before it ran: the ledger hears it here.
        await recorder.update_job_status(job_id, "cancelled", last_error="cancelled")


async def _batch_group_of(
    client: QueueClient, root_id: str
) -> tuple[dict[str, Any], str | None] | None:
    """(the root's arguments, its batch) when it has not ended and waits in a Gemini batch
    group, else None."""
    try:
        root = await client.get(root_id)
    except JobNotFound:
        return None
    args = root.args[0] if root.args and isinstance(root.args[0], dict) else {}
    if root.state.value not in _NOT_ENDED or not isinstance(args.get("batch_group"), dict):
        return None
    return args, root.batch


async def cancel_remote(client: QueueClient, left: dict[str, Any],
                        provider: Provider | None = None) -> list[str]:  # fmt: skip
    """Cancel the remote Gemini batch job of every group in `left` that all its documents
    have left now; returns the jobs asked to cancel. `provider` (default: the one the
    settings make, as the workers do) must have Batch Mode; offline there is nothing remote."""
    if not left:
        return []
    from pipeline.llm.factory import make_provider

    own = provider is None
    provider = provider or make_provider(client.settings)
    try:
        batches = getattr(provider, "batches", None)
        out = []
        for args, batch_id in left.values():
            remote = await cancel_if_abandoned(client, batches, args, batch_id)
            if remote:
                out.append(remote)
        return out
    finally:
        if own:
            await provider.aclose()


async def cancel_job(client: QueueClient, recorder: SqlRecorder | None, job_id: str,
                     provider: Provider | None = None) -> Cancelled:  # fmt: skip
    """Cancel one job (JobNotFound if unknown); a document's root job takes its run along,
    and its Gemini batch job when it was the last document in it (`provider`: see
    `cancel_remote`)."""
    job = await client.get(job_id)
    left: dict[str, Any] = {}
    if job.task == "analyze_document":
        jobs = await cancel_run(client, recorder, job_id, left)
    elif job.state.value in _NOT_ENDED:
        jobs = {job_id: await client.cancel(job_id)}
    else:
        jobs = {job_id: job.state.value}
    return Cancelled(job_id, jobs, [], await cancel_remote(client, left, provider))


async def cancel_batch(client: QueueClient, recorder: SqlRecorder, engine: Engine,
                       ref: str, provider: Provider | None = None) -> Cancelled:  # fmt: skip
    """Cancel the runs of every document of the batch that has not ended, and the Gemini
    batch jobs all of whose documents that leaves cancelled (`provider`: see
    `cancel_remote`)."""
    view = await batch_view(client, engine, ref, changing="cancel")
    batch_id = view.facts.batch_id
    result = Cancelled(batch_id, {}, [], note=view.note)
    left: dict[str, Any] = {}
    roots: list[str] = []
    for doc in view.documents:
        if doc.status in ("complete", "failed", "over_budget", "cancelled") or not doc.job_id:
            continue
        owner = await client.redis.hget(client.keys.job(doc.job_id), "batch")
        if owner is not None and owner != batch_id:
            result.skipped.append(doc.name)
            continue
        roots.append(doc.job_id)
    # all runs at once: a document's running job flagged before the next one's queued job
    # is cancelled would free a slot for it (cancel_runs)
    result.jobs.update(await cancel_runs(client, recorder, roots, left))
    result.batch_jobs = await cancel_remote(client, left, provider)
    await recorder.upsert_batch(batch_id, status="cancelled")
    return result


async def set_budget(client: QueueClient, recorder: SqlRecorder, engine: Engine, ref: str,
                     amount: Decimal | str) -> dict[str, Any]:  # fmt: skip
    """Make `amount` (USD) the batch's budget for every call from now on. Raises InputError
    for an amount the budget rule refuses, or an unknown batch, and BudgetTooSmall (as
    submit does) for one that cannot pay for one call of the batch's documents. An amount
    accepted that still cannot admit the call an over-budget document was refused for is
    set all the same (a person may mean to stop the batch) and said: `short` names those
    documents and `admits_usd` the amount that would admit any one of them beside `used_usd`,
    what the batch's budget counts spent or held by calls in flight now."""
    usd_amount = check_budget_usd(amount, "budget")
    view = await batch_view(client, engine, ref, changing="set the budget of")
    batch_id = view.facts.batch_id
    budget = Budget(client.redis, client.keys, client.settings)
    now = (await budget.status(batch_id))["batch"]
    check_floor(view, usd_amount, client.settings, now.spent_usd + now.reserved_usd)
    await set_limit(client.redis, client.keys, batch_id, usd_amount)
    # A batch an overrun stopped (README, Costs) admits calls again only under a limit above
    # the one in force when it stopped.
    (scope, *_) = budget.scopes(batch_id, usd_amount)
    stopped_at = await budget.raise_limit(scope, usd_amount)
    await recorder.upsert_batch(batch_id, budget_usd=usd_amount)
    waiting = [d for d in view.documents if d.status == "over_budget"]
    refused = await budget.refused(batch_id, [d.state.job_id for d in waiting if d.state.job_id])
    short = [{"name": d.name, "call_usd": usd(refused[d.state.job_id]),
              "admits_usd": usd(admitting_usd(now.spent_usd, now.reserved_usd,
                                              refused[d.state.job_id]))}
             for d in waiting if d.state.job_id in refused
             and admitting_usd(now.spent_usd, now.reserved_usd,
                               refused[d.state.job_id]) > usd_amount]  # fmt: skip
    return {"batch_id": batch_id, "budget_usd": usd(usd_amount),
            "spend_usd": usd(view.facts.spend), "over_budget": len(waiting),
            "overrun_stop": None if stopped_at is None else
            ("lifted" if usd_amount > stopped_at else "still stopped"),
            "stopped_at_usd": None if stopped_at is None else usd(stopped_at),
            "used_usd": usd(now.spent_usd + now.reserved_usd), "short": short,
            "admits_usd": max((d["admits_usd"] for d in short), key=Decimal, default=None),
            "note": view.note}  # fmt: skip


def check_floor(view: BatchView, amount: Decimal, s: Settings,
                used: Decimal = Decimal(0)) -> None:  # fmt: skip
    """Raise BudgetTooSmall, as a submission does (tasks/plan.py), when `amount` cannot
    admit one call of a document of the batch: of its model, at the batch rate while it is
    in a Gemini batch job, unless the offline analyzer (free) answers it. A batch without
    documents is checked against the settings' model and provider. `used` (USD) is what the
    batch has spent and holds for calls in flight: the amount the refusal names admits one
    call beside it."""
    from pipeline.errors import BudgetTooSmall
    from pipeline.llm.pricing import PriceTable
    from tasks.plan import cannot_pay_for_one_call, least_call_usd

    members = view.facts.members
    batched = {d.document_id for d in view.documents
               if d.mode and d.mode.get("mode") == "batch" and not d.mode.get("left")}  # fmt: skip
    kinds = {(m.model or s.model, m.document_id in batched) for m in members
             if (m.provider or provider_kind(s)) != "offline"}  # fmt: skip
    if not members and provider_kind(s) != "offline":
        kinds = {(s.model, False)}
    prices, now = PriceTable.load(), datetime.now(UTC)
    floors = {kind: least_call_usd(prices, kind[0], now, kind[1]) for kind in sorted(kinds)}
    short = [(kind, floor) for kind, floor in floors.items() if amount < floor]
    if short:
        (model, batch), floor = short[0]
        least = max(floors.values())  # what every document of the batch can start under
        ref = view.facts.label or view.facts.batch_id[:12]
        was = view.facts.budget_usd
        kept = f" (still {dollars(was)})" if was is not None else ""
        beside = (f" ({dollars(used)} spent or held by calls in flight + {dollars(least)} for "
                  "one call)" if used > 0 else "")  # fmt: skip
        needed = at_least_usd(used + least)
        raise BudgetTooSmall(
            f"{cannot_pay_for_one_call(amount, model, floor, batch)}; the budget of batch "
            f"{ref} was not changed{kept}. Give at least {dollars(needed)}{beside}.",
            needed,
        )


@dataclass
class Retried:
    name: str
    document_id: str
    status: str  # queued (a new run) | duplicate (a newer run answers) | skipped
    job_id: str | None = None
    reason: str | None = None
    # The new run's mode ("batch": in a Gemini batch job of the retried documents;
    # "interactive"), None when no run was queued; `mode_note` says why a document submitted
    # in Batch Mode is not retried in it (its deadline), else None.
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
    and says so. Returns (args or None, the note or None)."""
    from tasks.modes import due, fallback_at

    if not mode or not mode.get("mode"):
        return None, None
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
                   f"was {doc.status}: {doc.reason}", mode, r.note)  # fmt: skip


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
