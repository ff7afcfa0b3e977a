"""Budget holds for a batch group: the batch worst case of every request is reserved before
`batches.create`, kept while the job runs, and settled per response.

The holds are the ledger's ordinary reservations (pipeline/ledger/budget.py), one per
request, so the batch, day and month budgets bound batch spend exactly as they bound
interactive calls; each hold's token is its request's ledger row id, as an interactive
call's is its attempt's. A batch job outlives one worker, so each hold is written to the
group's Redis record as JSON and any member job renews it on each look (a look comes more
often than `hold_s`, PIPELINE_BATCH_POLL_MAX_S < the 900 s hold) and settles it when the job
is booked: at the request's booked cost, or released for a request without an answer.
Settling twice is refused by the budget script, so a repeated collect changes nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pipeline.errors import BudgetExceeded
from pipeline.failure_policy import failed_call
from pipeline.ledger.budget import CallBudget, Reservation, Scope
from pipeline.ledger.budget_words import would_exceed
from pipeline.llm.batch_group import BUDGET_AT_FIELD, BatchCreateBusy, BatchGroups, attempt_id
from pipeline.llm.batch_items import BatchItem
from pipeline.words import counted

log = logging.getLogger(__name__)
_FIELD = "hold:"


def _encode(r: Reservation) -> str:
    return json.dumps({"token": r.token, "amount_usd": str(r.amount_usd), "scopes": [
        [s.kind, s.name, None if s.limit_usd is None else str(s.limit_usd)]
        for s in r.scopes]})  # fmt: skip


def _decode(raw: str) -> Reservation:
    body: dict[str, Any] = json.loads(raw)
    scopes = tuple(
        Scope(kind, name, None if limit is None else Decimal(limit))
        for kind, name, limit in body["scopes"]
    )
    return Reservation(body["token"], Decimal(body["amount_usd"]), scopes)


async def holds(groups: BatchGroups, name: str) -> dict[str, Reservation]:
    """The group's holds by request key."""
    raw = await groups.redis.hgetall(groups.keys.batch_group(name))
    out: dict[str, Reservation] = {}
    for field, value in raw.items():
        field = field.decode() if isinstance(field, bytes) else field
        if field.startswith(_FIELD):
            out[field[len(_FIELD) :]] = _decode(value.decode() if isinstance(value, bytes)
                                                 else value)  # fmt: skip
    return out


async def reserve_group(budget: CallBudget, groups: BatchGroups, name: str,
                        items: Sequence[BatchItem], tokens: Mapping[str, int],
                        job_id: str | None = None) -> None:  # fmt: skip
    """Hold every request's batch worst case, all or none; nothing when the group holds
    already. One member reserves (a short claim, so two never hold twice for one group);
    raises BatchCreateBusy for the others while it does, and the JobError `failed_call`
    makes of BudgetExceeded (nothing held). `job_id` is the member job reserving: a group
    the batch budget refuses is noted under it (Budget.note_refused), so `pipeline budget
    --set` can say when a new amount still cannot admit the group. The group's holds are
    not tied to it (`budget` names no job): they outlive the member that took them."""
    if await holds(groups, name):
        return
    claim = groups.keys.batch_group(name) + ":holding"
    if not await groups.redis.set(claim, "1", nx=True, px=groups.create_lock_ms):
        raise BatchCreateBusy(f"batch group {name}: another worker is reserving its budget; "
                              "it is looked at again shortly")  # fmt: skip
    if await holds(groups, name):  # reserved by a member that finished just before
        return
    now = datetime.now(UTC)
    worst = {i.key: groups.worst_case_usd(i.request, tokens.get(i.key, 0), now) for i in items}
    taken: dict[str, Reservation] = {}
    try:
        for item in items:
            # Under the request's ledger row id: the reconciler then knows the row's cost
            # is this hold's to book (pipeline/ledger/floor.py), and a group reserved again
            # holds nothing twice.
            # All at `now`: the group's holds count in one day and month, which its ledger
            # rows carry (BUDGET_AT_FIELD, read by BatchGroups.submit and collect).
            taken[item.key] = await budget.reserve(worst[item.key],
                                                   token=attempt_id(name, item.key),
                                                   at=now)  # fmt: skip
    except BudgetExceeded as exc:
        for reservation in taken.values():
            await budget.cancel(reservation)
        await groups.redis.delete(claim)  # the others meet the same budget, not a wait
        raise_as = exc
        total = sum(worst.values(), Decimal(0))
        if (not exc.stopped and exc.spent_usd is not None and exc.limit_usd is not None
                and exc.spent_usd + total > exc.limit_usd):
            # The group cannot fit beside the spend: a wait for holds (when only the group's
            # own were in the way) would wait forever, and advice for one request (when that
            # one did not fit) would admit too little. The holds of calls in flight are the
            # scope's less the group's own, taken just before the refusal.
            own = sum((r.amount_usd for r in taken.values()), Decimal(0))
            others = max((exc.reserved_usd or Decimal(0)) - own, Decimal(0))
            what = f"a batch of {counted(len(items), 'request')}"
            raise_as = would_exceed(exc.scope, exc.scope_name, exc.spent_usd, total,
                                    exc.limit_usd, what, others)  # fmt: skip
            refused_job = job_id or budget.job_id
            if exc.scope == "batch" and refused_job is not None:
                await budget.budget.note_refused(exc.scope_name, refused_job, total)
        steer = failed_call(raise_as)
        raise (steer or raise_as) from exc
    held: dict[str, str] = {_FIELD + k: _encode(r) for k, r in taken.items()}
    held[BUDGET_AT_FIELD] = now.isoformat()
    await groups.redis.hset(groups.keys.batch_group(name), mapping=held)  # type: ignore[arg-type]
    await groups.redis.delete(claim)


async def renew_group(budget: CallBudget, groups: BatchGroups, name: str) -> None:
    """Keep the holds while the job runs; a lapsed one is logged (its room may be gone)."""
    for key, reservation in (await holds(groups, name)).items():
        if not await budget.extend(reservation):
            log.warning("batch group %s: the budget hold of %s lapsed or was settled", name, key)


async def settle_group(budget: CallBudget, groups: BatchGroups, name: str,
                       costs: Mapping[str, Decimal]) -> None:  # fmt: skip
    """Settle each hold at its request's booked cost (release it when nothing was billed)."""
    for key, reservation in (await holds(groups, name)).items():
        cost = costs.get(key, Decimal(0))
        if cost > 0:
            await budget.settle(reservation, cost)
        else:
            await budget.cancel(reservation)
