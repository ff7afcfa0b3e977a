"""Batch Mode for analysis jobs: a document submitted with `mode=batch` is answered by one
Gemini batch job shared by its whole submission (per model), at half the price.

Every document keeps its own `analyze_document` job, so status, results, follow and cancel
work as for interactive ones. The job, before its call, comes here (`wait_for_batch`): the
first member to run builds the group's requests (each single-call member's exact request;
only the members whose runs are in the group, as its submission or retry sealed once it knew
which: `_documents`, never a duplicate another run answers) and submits the group
(llm/batch_group.py: recorded in Redis and the ledger before `batches.create`, found again
by name after a crash). A member's job arguments name its group alone: the group's members
(each one's sha256, file name and job) are in the group's Redis record, written by its
submission or retry before the jobs were queued (`candidates`). Each member then looks at
the remote job and, while it runs, postpones itself with back-off
(`Retry(count_attempt=False)`: the job leaves its worker slot, keeps its attempts, and any
worker may take the next look under the usual lease and fencing). The member that sees the
job finished collects it for the group: answers are classified and validated like
interactive ones, booked at the batch rate (mode=batch) and put in the call store. Then each
member carries on with the interactive path, whose call is answered from the store and paid
nothing. A member whose batch answer was paid for but unusable gets the remedy an
interactive first answer would (tasks/analysis_call.py): blocked, it fails naming the reason
with no further call; cut at MAX_TOKENS, its one retry at the larger output budget; invalid,
the repair call. A member without a batch answer (failed, expired, cancelled request) is
answered interactively, under the usual attempt and budget rules. A member that needs
several calls (a long PDF) puts each of its parts in the group (key `sha256:first-last`);
once booked, its parts' jobs find their answers in the store and the merge call runs
interactively (it reads the parts' answers, so it cannot join the batch that makes them).

A member with a deadline (tasks/modes.py) looks again no later than its fallback time, and
from then on leaves the batch (tasks/batch_fallback.py) and carries on interactively; the
last member to leave cancels the remote job, and `collect_batch_group` books what it
answered.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pipeline.errors import JobError, JobNotFound, Permanent, Reason, Retry
from pipeline.llm.batch_group import (
    GROUP_TTL_S,
    USE,
    BatchCreateBusy,
    BatchGroups,
    candidates,
    recorded,
    seal,
    sealed_members,
)
from pipeline.llm.batch_items import BatchItem, RemoteBatch
from pipeline.llm.failure import ProviderCallError
from pipeline.queue.context import JobContext
from pipeline.queue.task import task
from tasks.analysis_call import accept_analysis
from tasks.batch_fallback import (
    FALLBACK,
    cancel_if_abandoned,
    leave,
    member_documents,
    release_for_collect,
)
from tasks.batch_holds import renew_group, reserve_group, settle_group
from tasks.modes import due

if TYPE_CHECKING:
    from pipeline.ledger.budget import CallBudget

log = logging.getLogger(__name__)

MODES = ("interactive", "batch")
# How long a group's members wait for its submission (or retry) to seal it (say which of its
# documents it queued runs for: pipeline/llm/batch_group.seal), looking every SEAL_LOOK_S:
# far longer than answering its duplicates takes. Past it (the submitter died, or queued the
# group before seals existed) the members seal it themselves (`_owned`).
SEAL_WAIT_S = 120.0
SEAL_LOOK_S = 0.5


def _limit(args: dict[str, Any]) -> Decimal | None:
    return None if args.get("budget_usd") in (None, "") else Decimal(str(args["budget_usd"]))


async def _budget(ctx: JobContext, args: dict[str, Any]) -> CallBudget:
    """The batch's budgets for a group's holds: its limit as last set (`pipeline budget
    --set`) over the job's copy, as every interactive call takes it (services.call), so a
    limit set while a document waits in a Gemini batch job applies to its group too."""
    from pipeline.ledger.batch_limit import current_limit

    limit = await current_limit(ctx.client.redis, ctx.client.keys, ctx.batch)
    budget: CallBudget = await ctx.deps["services"].budget.for_call(ctx.batch,
                                                                    limit or _limit(args))
    return budget


def _groups(ctx: JobContext) -> BatchGroups | None:
    services = ctx.deps["services"]
    batches = getattr(services.provider, "batches", None)
    if batches is None:
        return None
    s = ctx.client.settings
    return BatchGroups(batches, services.caller.store, services.recorder, services.prices,
                       create_lock_s=s.batch_create_lock_s,
                       inline_max_bytes=s.batch_inline_max_bytes,
                       line_max_bytes=s.batch_line_max_bytes)  # fmt: skip


async def _members(ctx: JobContext, args: dict[str, Any],
                   record: dict[str, str]) -> tuple[list[BatchItem], dict[str, int]]:  # fmt: skip
    """Each member's requests (one per part of a long PDF), each under its member's job,
    and their counted input, by key, for the members the group is made of (`_documents`:
    never one answered by another run); members that cannot be read are left out (their own
    jobs handle them). The members are the group's candidates in `record` (its Redis
    record), or in `args` for a job queued before the record kept them. Raises Retry while
    the group's documents are not said yet."""
    from tasks.analyze import load_pdf, plan_document

    services = ctx.deps["services"]
    documents = await _documents(ctx, args, record)
    items: list[BatchItem] = []
    tokens: dict[str, int] = {}
    for member in candidates(record, args["batch_group"]):
        if member["sha256"] not in documents:
            continue  # its run is another's ("duplicate"): sent, it would be paid twice
        try:
            # in memory: the group's requests outlive this loop (a local copy of an S3
            # object would not)
            whole = await load_pdf(ctx, member["sha256"])
            _, fitted, _ = await plan_document(ctx, whole, member["name"], args["model"],
                                               find_blank=False)  # fmt: skip
        except JobError as exc:
            log.info("batch group: %s left out (%s)", member["name"], exc)
            continue
        for fit in fitted:
            key = member["sha256"] if len(fitted) == 1 else \
                f"{member['sha256']}:{fit.first}-{fit.last}"  # fmt: skip
            # Booked under the member's own job (tasks/submission.py names it), whichever
            # member submits or collects; a group from before members named theirs, under
            # the job that does.
            items.append(BatchItem(key, fit.request, document=member["sha256"],
                                   job_id=member.get("job_id")))  # fmt: skip
            tokens[key] = await services.caller.counter.count(fit.request)
    return items, tokens


async def _documents(ctx: JobContext, args: dict[str, Any], record: dict[str, str]) -> set[str]:
    """The documents (sha256) the group is made of: as its record says (those its batch job
    carries once submitted, else those its submission or retry sealed once it knew which
    runs it queued, pipeline/llm/batch_group.seal). While neither is said, raises Retry (a
    short look, attempt kept) until SEAL_WAIT_S after this job was created; then seals the
    group here with the members whose own runs are in it (`_owned`)."""
    said = sealed_members(record)
    if said is not None:
        return set(said)
    waited_s = datetime.now(UTC).timestamp() - ctx.job.created_ms / 1000
    if waited_s < SEAL_WAIT_S:
        raise Retry("waiting for its submission to say which documents its Gemini batch job "
                    "carries", delay_s=_capped(SEAL_LOOK_S, due(args, ctx.client.settings)),
                    count_attempt=False, reason=Reason.IN_BATCH)  # fmt: skip
    name = str(args["batch_group"]["name"])
    grouped = candidates(record, args["batch_group"])
    owned = await _owned(ctx, args, grouped)
    log.warning("batch group %s: not sealed %.0f s after job %s was queued; sealed with the "
                "%d of its %d documents whose runs are in it", name, waited_s, ctx.job_id,
                len(owned), len(grouped))  # fmt: skip
    return set(await seal(ctx.client.redis, ctx.client.keys, name, owned))


async def _owned(ctx: JobContext, args: dict[str, Any],
                 grouped: list[dict[str, str]]) -> list[str]:  # fmt: skip
    """Of the members `grouped` (the group's candidates, `candidates`), those whose run is a
    job of this group: the job their idempotency key
    (tasks/plan.idempotency_key) names carries the group. One whose key names another run
    (a duplicate) or no job (its submitter died before enqueuing it) is left out. Every
    member when the key of this job's own document does not name it (keys made for another
    provider than this worker's): ownership cannot be read here."""
    from pipeline.queue.record import idempotency_digest
    from pipeline.redis.connection import text
    from tasks.plan import idempotency_key

    client, group = ctx.client, args["batch_group"]
    provider = ctx.deps["services"].caller.provider.name

    async def owner(sha: str) -> str | None:
        key = idempotency_key(sha, str(args["model"]), str(args["prompt_version"]), provider)
        found = await client.redis.get(client.keys.idempotency(idempotency_digest(key)))
        return None if found is None else text(found)

    members = [str(m["sha256"]) for m in grouped]
    if await owner(str(args["sha256"])) != ctx.job_id:
        return members
    owned = []
    for sha in members:
        job_id = await owner(sha)
        if job_id is None:
            continue
        if job_id != ctx.job_id:
            try:
                job = await client.get(job_id)
            except JobNotFound:
                continue
            theirs = job.args[0] if job.args and isinstance(job.args[0], dict) else {}
            if (theirs.get("batch_group") or {}).get("name") != group["name"]:
                continue
        owned.append(sha)
    return owned


async def _book_if_done(ctx: JobContext, groups: BatchGroups, args: dict[str, Any],
                        record: dict[str, str]) -> RemoteBatch:  # fmt: skip
    """Look at the group's remote job once (`record` names it); when it ended, book it for
    the whole group (answers to the call store, ledger rows at the batch rate, holds
    settled)."""
    remote = await groups.batches.get(record["remote"])
    if remote.done:
        name, model = str(args["batch_group"]["name"]), str(args["model"])
        budget = await _budget(ctx, args)
        items, tokens = await _members(ctx, args, record)
        done = await groups.collect(model, items, tokens, accept=accept_analysis,
                                    job_id=ctx.job_id, batch_id=ctx.batch,
                                    name=name)  # fmt: skip
        if done is not None:
            await settle_group(budget, groups, name, done.costs)
            await release_for_collect(ctx.client, name, member_documents(record, args))
    return remote


async def _fall_back(ctx: JobContext, groups: BatchGroups, args: dict[str, Any]) -> None:
    """This document's deadline is near: take it out of the batch (the last to leave cancels
    the remote job) and return, so the job carries on interactively. Raises Retry (a short
    look, attempt kept) when the batch's answer was claimed first: it is being stored."""
    name = str(args["batch_group"]["name"])
    if not await leave(groups.redis, groups.keys, name, str(args["sha256"]), FALLBACK,
                       ctx.client.settings.document_retention_s):  # fmt: skip
        raise Retry("its batch answer is being stored; used in a moment", delay_s=1.0,
                    count_attempt=False, reason=Reason.IN_BATCH)  # fmt: skip
    cancelled = await cancel_if_abandoned(ctx.client, groups.batches, args, ctx.batch)
    log.info("job %s: deadline %s near, finished interactively%s", ctx.job_id,
             args.get("deadline"), f" (cancelled {cancelled})" if cancelled else "")  # fmt: skip
    await ctx.progress({"stage": "fallback", "deadline": args.get("deadline"),
                        "cancelled_batch_job": cancelled})  # fmt: skip


async def wait_for_batch(ctx: JobContext, args: dict[str, Any]) -> None:
    """Return once this document's batch answer is booked (in the call store when usable),
    or at once when Batch Mode does not apply or its deadline is near (it then runs
    interactively); else raise Retry to look again later, no later than its fallback time.
    Raises Retry (counted) when the Batch API fails, as any provider failure."""
    groups = _groups(ctx)
    if groups is None or "batch_group" not in args:
        return  # a provider without Batch Mode (offline): interactive
    s = ctx.client.settings
    name = str(args["batch_group"]["name"])
    model = str(args["model"])
    record = await recorded(groups.store, name)
    if record.get(USE + str(args["sha256"])) not in (None, "batch"):
        if await ctx.client.redis.hget(ctx.client.keys.job(ctx.job_id), "cancel") == "1":
            # Cancelled while looking: no interactive call for it (the worker stops it soon).
            raise Permanent("cancelled: taken out of its Gemini batch job",
                            reason=Reason.CANCELLED)  # fmt: skip
        return  # this document left the batch: the interactive path
    if record.get("booked"):
        return  # answered (from the call store) or, without an answer, interactively
    left_s = due(args, s)
    try:
        if record.get("remote"):
            remote = await _book_if_done(ctx, groups, args, record)
            if remote.done:
                return
            if left_s == 0:
                return await _fall_back(ctx, groups, args)
            budget = await _budget(ctx, args)
            await renew_group(budget, groups, name)
        else:
            if left_s == 0:  # never created: nothing to cancel
                return await _fall_back(ctx, groups, args)
            items, tokens = await _members(ctx, args, record)
            if not any(i.document == args["sha256"] for i in items):
                return  # this document is not batched
            budget = await _budget(ctx, args)
            await reserve_group(budget, groups, name, items, tokens,  # before create
                                job_id=ctx.job_id)  # fmt: skip
            remote = await groups.submit(model, items, tokens, job_id=ctx.job_id,
                                         batch_id=ctx.batch, name=name)  # fmt: skip
    except ProviderCallError as exc:
        if left_s == 0:  # the Batch API fails at the deadline: interactive calls may not
            log.warning("job %s: Gemini Batch API: %s; leaving the batch", ctx.job_id, exc)
            return await _fall_back(ctx, groups, args)
        raise Retry(f"Gemini Batch API: {exc}", delay_s=_capped(s.batch_poll_s, left_s),
                    reason=Reason.PROVIDER_ERROR) from exc  # fmt: skip
    except BatchCreateBusy as exc:  # another member creates it, or died doing so: look later
        raise Retry(str(exc), delay_s=_capped(s.batch_poll_s, left_s), count_attempt=False,
                    reason=Reason.IN_BATCH) from exc  # fmt: skip
    looks = await _looked(groups, name, ctx.job_id)
    delay = _capped(min(s.batch_poll_max_s, s.batch_poll_s * 2 ** min(looks - 1, 20)), left_s)
    since = (remote.create_time or datetime.now(UTC)).isoformat(timespec="seconds")
    await ctx.progress({"stage": "in_batch", "batch_job": remote.name, "state": remote.state,
                        "since": since, "next_look_s": delay})  # fmt: skip
    raise Retry(f"in Gemini batch {remote.name}, state {remote.state} since {since}",
                delay_s=delay, count_attempt=False, reason=Reason.IN_BATCH)  # fmt: skip


async def _looked(groups: BatchGroups, name: str, job_id: str) -> int:
    """Count a look of job `job_id` at the group `name`'s remote job (its back-off), and keep
    the group's record GROUP_TTL_S from now: its members and seal live there, not in the
    jobs' arguments, so it must outlive every job that still looks. Returns the count."""
    group = groups.keys.batch_group(name)
    looks = int(await groups.redis.hincrby(group, f"looks:{job_id}", 1))
    await groups.redis.expire(group, GROUP_TTL_S)
    return looks


def _capped(delay_s: float, left_s: float | None) -> float:
    """The next look, no later than the fallback time (a little after it, so it is due)."""
    return delay_s if left_s is None else min(delay_s, left_s + 0.05)


@task(name="collect_batch_group", expected_duration_s=30, timeout_s=900, max_attempts=5,
      retry_delays_s=(30, 120, 600), uses_services=True)  # fmt: skip
async def collect_batch_group(ctx: JobContext, args: dict[str, Any]) -> dict[str, Any]:
    """Book a batch job every document of which left it (tasks/batch_fallback.py): look with
    back-off until it ends, then book what it answered (never stored for a document) and
    settle the group's holds. `args`: model, budget_usd, batch_group, documents."""
    groups = _groups(ctx)
    if groups is None:
        return {"booked": None}
    s = ctx.client.settings
    name = str(args["batch_group"]["name"])
    record = await recorded(groups.store, name)
    if record.get("booked") or not record.get("remote"):
        return {"booked": record.get("booked")}
    try:
        remote = await _book_if_done(ctx, groups, args, record)
    except ProviderCallError as exc:
        raise Retry(f"Gemini Batch API: {exc}", delay_s=s.batch_poll_s,
                    reason=Reason.PROVIDER_ERROR) from exc  # fmt: skip
    if remote.done:
        return {"booked": remote.state, "batch_job": remote.name}
    # No member looks any more: the collect keeps the group's budget holds alive.
    await renew_group(await _budget(ctx, args),
                      groups, name)  # fmt: skip
    looks = await _looked(groups, name, ctx.job_id)
    raise Retry(f"batch job {remote.name} is {remote.state}; its answers are booked when it "
                "ends", delay_s=min(s.batch_poll_max_s, s.batch_poll_s * 2 ** min(looks - 1, 20)),
                count_attempt=False, reason=Reason.IN_BATCH)  # fmt: skip
