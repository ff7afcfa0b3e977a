"""Batch Mode for analysis jobs: a document submitted with `mode=batch` is answered by one
Gemini batch job shared by its whole submission (per model), at half the price.

Every document keeps its own `analyze_document` job, so status, results, follow and cancel
work as for interactive ones. The job, before its call, comes here (`wait_for_batch`): the
first member to run builds the group's requests (each single-call member's exact request)
and submits the group (llm/batch_group.py: recorded in Redis and the ledger before
`batches.create`, found again by name after a crash); each member then looks at the remote
job and, while it runs, postpones itself with back-off (`Retry(count_attempt=False)`: the
job leaves its worker slot, keeps its attempts, and any worker may take the next look under
the usual lease and fencing). The member that sees the job finished collects it for the
group: answers are classified and validated like interactive ones, booked at the batch rate
(mode=batch) and put in the call store. Then each member carries on with the interactive
path, whose call is answered from the store and paid nothing; a member whose batch answer
was unusable or missing (failed, expired, cancelled request) is answered interactively,
under the usual attempt and budget rules. A member that needs several calls (a long PDF)
puts each of its parts in the group (key `sha256:first-last`); once booked, its parts'
jobs find their answers in the store and the merge call runs interactively (it reads the
parts' answers, so it cannot join the batch that makes them).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pipeline.errors import JobError, Reason, Retry
from pipeline.llm.batch import BatchItem
from pipeline.llm.batch_group import BatchCreateBusy, BatchGroups, recorded
from pipeline.llm.failure import ProviderCallError
from pipeline.queue.context import JobContext
from tasks.analysis_call import accept_analysis
from tasks.batch_holds import renew_group, reserve_group, settle_group

log = logging.getLogger(__name__)

MODES = ("interactive", "batch")


def _limit(args: dict[str, Any]) -> Decimal | None:
    return None if args.get("budget_usd") in (None, "") else Decimal(str(args["budget_usd"]))


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


async def _members(ctx: JobContext, args: dict[str, Any]) -> tuple[list[BatchItem], dict[str, int]]:
    """Each member's requests (one per part of a long PDF) and their counted input, by
    key; members that cannot be read are left out (their own jobs handle them)."""
    from tasks.analyze import plan_document

    services = ctx.deps["services"]
    items: list[BatchItem] = []
    tokens: dict[str, int] = {}
    for member in args["batch_group"]["members"]:
        try:
            _, _, fitted = await plan_document(ctx, member["sha256"], member["name"],
                                               args["model"])  # fmt: skip
        except JobError as exc:
            log.info("batch group: %s left out (%s)", member["name"], exc)
            continue
        for fit in fitted:
            key = member["sha256"] if len(fitted) == 1 else \
                f"{member['sha256']}:{fit.first}-{fit.last}"  # fmt: skip
            items.append(BatchItem(key, fit.request, document=member["sha256"]))
            tokens[key] = await services.caller.counter.count(fit.request)
    return items, tokens


async def wait_for_batch(ctx: JobContext, args: dict[str, Any]) -> None:
    """Return once this document's batch answer is booked (in the call store when usable),
    or at once when Batch Mode does not apply; else raise Retry to look again later.
    Raises Retry (counted) when the Batch API fails, as any provider failure."""
    groups = _groups(ctx)
    if groups is None or "batch_group" not in args:
        return  # a provider without Batch Mode (offline): interactive
    s = ctx.client.settings
    name = str(args["batch_group"]["name"])
    model = str(args["model"])
    record = await recorded(groups.store, name)
    if record.get("booked"):
        return
    budget = await ctx.deps["services"].budget.for_call(ctx.batch, _limit(args))
    try:
        if record.get("remote"):
            remote = await groups.batches.get(record["remote"])
            if remote.done:
                items, tokens = await _members(ctx, args)
                done = await groups.collect(model, items, tokens, accept=accept_analysis,
                                            job_id=ctx.job_id, batch_id=ctx.batch,
                                            name=name)  # fmt: skip
                if done is not None:
                    await settle_group(budget, groups, name, done.costs)
                return
            await renew_group(budget, groups, name)
        else:
            items, tokens = await _members(ctx, args)
            if not any(i.document == args["sha256"] for i in items):
                return  # this document is not batched
            await reserve_group(budget, groups, name, items, tokens)  # before create
            remote = await groups.submit(model, items, tokens, job_id=ctx.job_id,
                                         batch_id=ctx.batch, name=name)  # fmt: skip
    except ProviderCallError as exc:
        raise Retry(f"Gemini Batch API: {exc}", delay_s=s.batch_poll_s,
                    reason=Reason.PROVIDER_ERROR) from exc  # fmt: skip
    except BatchCreateBusy as exc:  # another member creates it, or died doing so: look later
        raise Retry(str(exc), delay_s=s.batch_poll_s, count_attempt=False,
                    reason=Reason.IN_BATCH) from exc  # fmt: skip
    looks = await groups.redis.hincrby(groups.keys.batch_group(name), f"looks:{ctx.job_id}", 1)
    delay = min(s.batch_poll_max_s, s.batch_poll_s * 2 ** min(looks - 1, 20))
    since = (remote.create_time or datetime.now(UTC)).isoformat(timespec="seconds")
    await ctx.progress({"stage": "in_batch", "batch_job": remote.name, "state": remote.state,
                        "since": since, "next_look_s": delay})  # fmt: skip
    raise Retry(f"in Gemini batch {remote.name}, state {remote.state} since {since}",
                delay_s=delay, count_attempt=False, reason=Reason.IN_BATCH)  # fmt: skip
