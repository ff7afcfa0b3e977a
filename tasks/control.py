"""Steering a batch: cancel it (or one job), change its budget. The CLI (`pipeline
cancel|budget`) and the API (`POST /batches/{id}/cancel`, `PATCH /batches/{id}`,
`POST /jobs/{id}/cancel`) call these.

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

A retry (each failed, over-budget or cancelled document gets a new run) is tasks/retry.py's.
"""

from __future__ import annotations

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
