"""Budgets reserved in Redis before a call, so concurrent workers cannot overspend together.

Checking spend after the fact lets N workers each see "room for one more" and all go:
instead each call reserves its worst-case cost against every budget that applies (its
batch, the UTC day, the UTC month) in one Lua script, all or nothing, and settles to the
real cost afterwards. Money in Redis is integer nano-dollars; holds lapse after `hold_s`
so a killed worker's reservation comes back without anyone cleaning up, and the caller
`extend`s a live call's hold while it runs so a slow call never loses it.

A reservation refused only because of other calls' *holds* (settled spend alone leaves
room) is `BudgetExceeded(held_only=True)`: those calls usually settle far below their worst
case, so the call should wait and try again rather than end the job over budget.

The reservation is the call's bound (exact input tokens from countTokens, maxOutputTokens
and the thinking budget; pipeline/llm/caller.py), so a settle never exceeds it. If one does
(a provider changed how it bills), the cost is booked in full and every scope with a limit
*stops*: it admits no call (`BudgetExceeded(stopped=True)`) until a person raises its limit
above the one in force then (`pipeline budget BATCH --set`, PATCH /batches/{id}, or a larger
PIPELINE_BUDGET_DAY_USD / _MONTH_USD; in code `raise_limit`).

A hold belongs to the lease of the job that took it (`for_call(job_id=, lease=)` indexes it
under the job): when the sweeper recovers a dead worker's job, `job_holds` finds its holds
and the recovery settles each at once (pipeline/ledger/reconcile.py): `abandon` books a call
that may have been billed at its worst case, `cancel` frees one that never went out, and a
later `settle` with the true cost corrects an abandoned one. Lapsing after `hold_s` is only
the last resort.

A token names one call and is booked once: a second close of it is refused (or corrects
an abandoned one's booking), and the reconciler's floor (floor.py), which raises spend to
the ledger's, reads each recent call's token state, so a cost is never booked by both the
floor and a close.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from pipeline.errors import BudgetExceeded, InputError
from pipeline.ledger.budget_words import scope_words, stopped_refusal, would_exceed
from pipeline.money import dollars, format_usd
from pipeline.redis.connection import text
from pipeline.redis.keys import Keys
from pipeline.redis.scripts import register
from pipeline.settings import Settings

NANOS = Decimal(10) ** 9
# The largest budget any door (CLI, API, Python) accepts: far above any real batch, and small
# enough that nano-dollar integers in Redis stay well inside 64 bits.
MAX_BUDGET_USD = Decimal("1000000")
_LUA = Path(__file__).with_name("lua")
# How long a token's state (held | settled | cancelled | abandoned:<n>) is kept.
STATE_TTL_S = 3 * 86400
# How long a scope's totals are kept after their last change, by kind.
SCOPE_TTL_S = {"batch": 90 * 86400, "day": 3 * 86400, "month": 62 * 86400}

def day_month_scopes(at: datetime) -> tuple[str, str]:
    """The names of the UTC day and month budget scopes a call counted at `at` is in:
    ("day:2026-11-30", "month:2026-11"). The one rule the reservation and the ledger's floor
    (reconcile.py) both use. A naive `at` is taken as UTC (SQLite hands those back)."""
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return f"day:{at:%Y-%m-%d}", f"month:{at:%Y-%m}"


def to_nanos(usd: Decimal, *, round_up: bool = False) -> int:
    if usd < 0:
        raise ValueError(f"a cost cannot be negative (got {usd})")
    rounding = ROUND_CEILING if round_up else ROUND_HALF_UP
    return int((Decimal(usd) * NANOS).to_integral_value(rounding=rounding))


def from_nanos(nanos: int | str | bytes) -> Decimal:
    raw = text(nanos)
    return Decimal(int(raw)) / NANOS


def check_budget_usd(value: Decimal | str, name: str = "budget") -> Decimal:
    """The one budget rule every door uses: a finite amount of USD above 0 and at most
    MAX_BUDGET_USD. `value` is a Decimal or its text (e.g. "2.50"); `name` is how the
    caller's user calls it (`--budget`, the form field `budget`), for the message.

    Raises InputError saying what to give instead.
    """
    try:
        amount = value if isinstance(value, Decimal) else Decimal(value.strip())
    except InvalidOperation:
        raise InputError(f"{name} {value!r} is not an amount; give USD, e.g. 2.50") from None
    # is_finite() first: comparing a NaN Decimal raises InvalidOperation instead of answering.
    if not amount.is_finite() or amount <= 0 or amount > MAX_BUDGET_USD:
        raise InputError(
            f"{name} {str(value)!r} must be a positive amount in USD up to "
            f"{MAX_BUDGET_USD:,}, e.g. 2.50"
        )
    return amount


@dataclass(frozen=True)
class Scope:
    kind: str  # batch | day | month
    name: str  # e.g. batch:<id>, day:2026-11-21, month:2026-11
    limit_usd: Decimal | None

    def keys(self, keys: Keys) -> tuple[str, str]:
        return keys.budget(self.name), keys.budget(self.name + ":holds")


@dataclass(frozen=True)
class Reservation:
    """The token `reserve` hands back; `settle`/`cancel` need it to find the same scopes.
    `job_id` and `lease` (the job's fencing token) say whose lease the hold lives by."""

    token: str
    amount_usd: Decimal
    scopes: tuple[Scope, ...]
    job_id: str | None = None
    lease: str | None = None
    # The moment whose UTC day and month `scopes` name (None when not known, e.g. a hold read
    # back from a job's index). The call's ledger row carries it (llm_calls.budget_at) so the
    # reconciler's floor counts the call in the same day and month as its hold.
    at: datetime | None = None


@dataclass(frozen=True)
class ScopeStatus:
    """A scope's spent, reserved and limit in USD; `stopped_at_usd` is the limit in force
    when an overrun stopped it (None while it runs): only a higher limit admits calls."""

    spent_usd: Decimal
    reserved_usd: Decimal
    limit_usd: Decimal | None
    stopped_at_usd: Decimal | None = None

    @property
    def stopped(self) -> bool:
        return self.stopped_at_usd is not None

    def as_dict(self) -> dict[str, str | bool | None]:
        return {
            "spent_usd": format_usd(self.spent_usd),
            "reserved_usd": format_usd(self.reserved_usd),
            "limit_usd": None if self.limit_usd is None else format_usd(self.limit_usd),
            "stopped": self.stopped,
        }


class Budget:
    """Spend limits per batch, UTC day and UTC month, kept in Redis as integer nano-dollars.

    A call reserves its worst case in every scope that applies before it is sent (one Lua
    script: all or nothing, BudgetExceeded naming the scope otherwise), and settles the hold
    at its real cost after. Holds lapse after `hold_s` unless renewed, so a dead worker's
    hold comes back.
    """

    def __init__(
        self, redis: aioredis.Redis, keys: Keys, settings: Settings, hold_s: float = 900.0
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.hold_ms = int(hold_s * 1000)
        scripts = register(
            redis, _LUA, "budget_reserve", "budget_settle", "budget_status", "budget_extend",
            "budget_raise"
        )  # fmt: skip
        self._reserve = scripts["budget_reserve"]
        self._settle = scripts["budget_settle"]
        self._status = scripts["budget_status"]
        self._extend = scripts["budget_extend"]
        self._raise = scripts["budget_raise"]

    @property
    def hold_s(self) -> float:
        return self.hold_ms / 1000

    def scopes(
        self, batch_id: str | None, batch_limit_usd: Decimal | None, at: datetime | None = None
    ) -> tuple[Scope, ...]:
        """Every budget a call made at `at` (default now) counts against; day and month
        windows are UTC (`day_month_scopes`)."""
        day, month = day_month_scopes(at or datetime.now(UTC))
        found = []
        if batch_id is not None:
            found.append(Scope("batch", f"batch:{batch_id}", batch_limit_usd))
        found.append(Scope("day", day, self.settings.budget_day_usd))
        found.append(Scope("month", month, self.settings.budget_month_usd))
        return tuple(found)

    async def for_call(
        self,
        batch_id: str | None,
        batch_limit_usd: Decimal | None = None,
        *,
        job_id: str | None = None,
        lease: str | None = None,
    ) -> CallBudget:
        """The budgets of calls made for `batch_id`; with `job_id` and `lease` (the job's
        fencing token) their holds are tied to that lease (see `job_holds`)."""
        return CallBudget(self, batch_id, batch_limit_usd, job_id=job_id, lease=lease)

    async def reserve(
        self,
        scopes: tuple[Scope, ...],
        worst_case_usd: Decimal,
        *,
        job_id: str | None = None,
        lease: str | None = None,
        token: str | None = None,
        at: datetime | None = None,
    ) -> Reservation:
        """Hold `worst_case_usd` in every scope, or raise BudgetExceeded (nothing held).
        `token` names the call (default: a new one); a token that holds already, or whose
        call was booked, holds nothing more (only a cancelled one may hold again). `at` is
        the moment `scopes` were named for (`scopes(..., at)`), handed back on the
        Reservation for the call's ledger row."""
        token = token or uuid.uuid4().hex
        amount = to_nanos(worst_case_usd, round_up=True)
        entry = ""
        if job_id is not None:
            entry = json.dumps({"lease": lease, "amount": amount,
                                "scopes": [[sc.kind, sc.name] for sc in scopes]})  # fmt: skip
        args: list[Any] = [token, amount, self.hold_ms, STATE_TTL_S, entry]
        for scope in scopes:
            limit_nanos = -1 if scope.limit_usd is None else to_nanos(scope.limit_usd)
            args += [limit_nanos, SCOPE_TTL_S[scope.kind]]
        reply = await self._reserve(keys=self._keys(token, scopes, job_id), args=args)
        if int(reply[0]) != 1:
            scope = scopes[int(reply[1]) - 1]
            spent, reserved, limit = (from_nanos(v) for v in reply[2:5])
            if int(reply[5]) == 2:
                if scope.kind == "batch" and job_id is not None:  # for `budget --set` to say
                    await self.note_refused(scope.name, job_id, Decimal(worst_case_usd))
                raise stopped_refusal(scope.kind, scope.name, spent, limit,
                                      from_nanos(reply[6]), Decimal(worst_case_usd),
                                      reserved)  # fmt: skip
            held_only = int(reply[5]) == 0
            if held_only:
                raise BudgetExceeded(
                    f"{scope_words(scope.kind, scope.name)} is held by running calls: "
                    f"{dollars(spent)} spent + {dollars(reserved)} reserved + "
                    f"{dollars(worst_case_usd)} for this call > limit {dollars(limit)}; the call "
                    "waits for them to settle (they usually cost less than their worst case)",
                    scope=scope.kind,
                    held_only=True,
                    scope_name=scope.name,
                    spent_usd=spent,
                    limit_usd=limit,
                    reserved_usd=reserved,
                )
            if scope.kind == "batch" and job_id is not None:
                await self.note_refused(scope.name, job_id, Decimal(worst_case_usd))
            raise would_exceed(scope.kind, scope.name, spent, Decimal(worst_case_usd), limit,
                               held=reserved)  # fmt: skip
        return Reservation(token, Decimal(worst_case_usd), scopes, job_id, lease, at)

    async def note_refused(self, scope_name: str, job_id: str, worst_usd: Decimal) -> None:
        """Keep what `job_id` asked of the batch scope `scope_name` when the batch budget
        refused it outright (its job ends over_budget), so `refused` can say, when the
        budget is set again, whether the new limit admits it."""
        key = self.keys.budget(scope_name + ":refused")
        await self.redis.hset(key, job_id, str(to_nanos(worst_usd, round_up=True)))
        await self.redis.expire(key, SCOPE_TTL_S["batch"])

    async def refused(self, batch_id: str, job_ids: list[str]) -> dict[str, Decimal]:
        """The worst case (USD) each of `job_ids` was refused by the batch's budget for
        (`note_refused`); jobs never refused are left out."""
        if not job_ids:
            return {}
        raw = await self.redis.hmget(self.keys.budget(f"batch:{batch_id}:refused"), job_ids)
        return {j: from_nanos(v) for j, v in zip(job_ids, raw, strict=True) if v is not None}

    async def settle(self, reservation: Reservation, actual_usd: Decimal) -> bool:
        """Book the real cost and free the hold; False if this token was already closed.
        A cost above the reservation is booked too, and stops the scopes (see module)."""
        return await self._close(reservation, "settle", to_nanos(actual_usd))

    async def raise_limit(self, scope: Scope, limit_usd: Decimal) -> Decimal | None:
        """A person's new limit for `scope`, used instead of any lower limit calls carry
        (a batch's limit travels in its jobs' arguments); lifts an overrun stop when it is
        above the limit in force then. Returns the limit the scope was stopped at, or None.
        Raises InputError for a limit that is not a budget."""
        nanos = to_nanos(check_budget_usd(limit_usd, "limit"))
        totals, _ = scope.keys(self.keys)
        reply = await self._raise(keys=[totals], args=[nanos, SCOPE_TTL_S[scope.kind]])
        return None if int(reply) < 0 else from_nanos(reply)

    async def cancel(self, reservation: Reservation) -> bool:
        """Free the hold of a call that never went out; nothing is booked (an abandoned
        one's booked amount is taken back)."""
        return await self._close(reservation, "cancel", 0)

    async def abandon(self, reservation: Reservation, booked_usd: Decimal) -> bool:
        """Book `booked_usd` (the worst case of a call whose worker was lost mid-call, or the
        ledger's figure for it) as spent now and free the hold; a later `settle` with the
        true cost corrects it. False if the token was closed already."""
        return await self._close(reservation, "abandon", to_nanos(booked_usd, round_up=True))

    async def job_holds(self, job_id: str) -> list[Reservation]:
        """The open holds of `job_id`'s calls, each with the lease (fencing token) it was
        taken under; closed ones leave the index when they close."""
        raw = await self.redis.hgetall(self.keys.budget_job_holds(job_id))
        out = []
        for token, value in sorted(raw.items()):
            entry = json.loads(text(value))
            scopes = tuple(Scope(kind, name, None) for kind, name in entry["scopes"])
            out.append(Reservation(text(token), from_nanos(int(entry["amount"])), scopes,
                                   job_id, entry.get("lease")))  # fmt: skip
        return out

    async def extend(self, reservation: Reservation) -> bool:
        """Keep the hold of a call still running for another `hold_s`; False if it lapsed
        or was closed already (it is not brought back: the room may be taken by now)."""
        args: list[Any] = [reservation.token, self.hold_ms, STATE_TTL_S]
        reply = await self._extend(keys=self._reservation_keys(reservation), args=args)
        return int(reply) > 0

    async def _close(self, reservation: Reservation, action: str, nanos: int) -> bool:
        args: list[Any] = [reservation.token, action, nanos, STATE_TTL_S]
        args += [SCOPE_TTL_S[s.kind] for s in reservation.scopes]
        args.append(to_nanos(reservation.amount_usd, round_up=True))
        reply = await self._settle(keys=self._reservation_keys(reservation), args=args)
        return int(reply) >= 1

    async def status(
        self, batch_id: str | None = None, batch_limit_usd: Decimal | None = None
    ) -> dict[str, ScopeStatus]:
        """Spent, reserved and limit per scope ("batch" only when a batch id is given).

        Without `batch_limit_usd` the batch limit is the one its last reservation used."""
        scopes = self.scopes(batch_id, batch_limit_usd)
        keys = [k for scope in scopes for k in scope.keys(self.keys)]
        reply = await self._status(keys=keys, args=[])
        out = {}
        for i, scope in enumerate(scopes):
            spent, reserved, stored, stopped = reply[4 * i : 4 * i + 4]
            limit = scope.limit_usd
            if scope.kind == "batch" and limit is None and int(stored) >= 0:
                limit = from_nanos(stored)
            stopped_at = from_nanos(stopped) if int(stopped) >= 0 else None
            out[scope.kind] = ScopeStatus(
                from_nanos(spent), from_nanos(reserved), limit, stopped_at
            )
        return out

    def state_key(self, token: str) -> str:
        """The key of a token's state: held | settled | cancelled | abandoned:<n>."""
        return self.keys.budget("hold:" + token)

    def _keys(self, token: str, scopes: tuple[Scope, ...], job_id: str | None) -> list[str]:
        index = self.keys.budget_job_holds(job_id) if job_id else self.keys.unused
        return [self.state_key(token), index] + [
            k for scope in scopes for k in scope.keys(self.keys)
        ]

    def _reservation_keys(self, reservation: Reservation) -> list[str]:
        return self._keys(reservation.token, reservation.scopes, reservation.job_id)


class CallBudget:
    """The budgets of one call site (a batch), in the shape the LLM caller uses."""

    def __init__(
        self,
        budget: Budget,
        batch_id: str | None,
        batch_limit_usd: Decimal | None,
        *,
        job_id: str | None = None,
        lease: str | None = None,
    ) -> None:
        self.budget = budget
        self.batch_id = batch_id
        self.batch_limit_usd = batch_limit_usd
        self.job_id = job_id
        self.lease = lease

    async def reserve(
        self, worst_case_usd: Decimal, token: str | None = None, at: datetime | None = None
    ) -> Reservation:
        """Hold `worst_case_usd` in every scope or raise BudgetExceeded (nothing held);
        `token` as Budget.reserve. The day and month are `at`'s (default now), decided once
        here: the Reservation's `at` is what the call's ledger row must carry."""
        at = at or datetime.now(UTC)
        scopes = self.budget.scopes(self.batch_id, self.batch_limit_usd, at)
        return await self.budget.reserve(scopes, worst_case_usd, job_id=self.job_id,
                                         lease=self.lease, token=token, at=at)  # fmt: skip

    async def settle(self, token: Reservation, actual_usd: Decimal) -> bool:
        return await self.budget.settle(token, actual_usd)

    async def cancel(self, token: Reservation) -> bool:
        return await self.budget.cancel(token)

    async def extend(self, token: Reservation) -> bool:
        return await self.budget.extend(token)

    @property
    def hold_s(self) -> float:
        """How long a hold lasts unrenewed; the caller renews well within it."""
        return self.budget.hold_s
