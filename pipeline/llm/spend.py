"""The caller's side of money: what it needs of a price table and of the budgets, keeping a
budget hold alive during a long call, and telling a person when a bill was not what the
reservation said (an overrun, or usage left out of the answer).

The budgets themselves live in pipeline/ledger/budget.py; the LLM layer sees them only
through `SpendLimit`, so it stays free of the ledger.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from redis.asyncio import Redis

from pipeline.llm.attempts import CallAttempt
from pipeline.llm.offline.pages import MODEL_VERSION as OFFLINE_MODEL_VERSION  # never billed
from pipeline.llm.provider import LLMRequest, Usage
from pipeline.llm.renewal import renewing
from pipeline.llm.usage import BookedUsage
from pipeline.money import dollars
from pipeline.redis.keys import Keys

log = logging.getLogger("pipeline.llm.caller")

NOTICE_TTL_S = 90 * 86400  # how long "warned once for this batch" is remembered
OVERRUN_NOTE = "budget overrun"  # how an overrun's ledger row (llm_calls.error) begins


class Prices(Protocol):
    """What the caller needs of a price table (pipeline/llm/pricing.py's PriceTable)."""

    def cost(self, model_version: str, usage: Usage, at: datetime) -> Decimal: ...


class SpendLimit(Protocol):
    """What the caller needs of the budgets that apply to one call (ledger.budget.CallBudget):
    hold the call's bound before the call (raising BudgetExceeded when it does not fit), then
    settle the hold at the real cost, or cancel it when nothing can have been billed.
    Settling above the hold stops the budget's scopes from admitting calls (an overrun)."""

    async def reserve(self, worst_case_usd: Decimal) -> Any: ...

    async def settle(self, token: Any, actual_usd: Decimal) -> object: ...

    async def cancel(self, token: Any) -> object: ...

    # Optional: `extend(token)` and `hold_s` let a long call keep its hold alive.


def bound_usd(
    prices: Prices | None, request: LLMRequest, input_tokens: int, at: datetime
) -> Decimal:
    """The most `request` can be billed: `input_tokens` (its countTokens figure) at the input
    rate — the long-context rate when over the model's threshold — and its output bound
    (maxOutputTokens + thinking budget) at the output rate, nothing cached. $0 without a
    price table."""
    if prices is None:
        return Decimal("0")
    worst = getattr(prices, "worst_case_cost", None)
    if worst is not None:
        return Decimal(worst(request.model, input_tokens, request.output_bound_tokens, at))
    usage = Usage(input_tokens=input_tokens, output_tokens=request.output_bound_tokens)
    return prices.cost(request.model, usage, at)


def answer_usd(
    prices: Prices | None, request: LLMRequest, model_version: str, usage: Usage, at: datetime
) -> Decimal:
    """The price of an answer already paid for; never raises, so it cannot lose one.

    The answering model version is priced if the table knows it, else the model asked for
    (a new version string is usually the same price); failing both, $0 and a warning rather
    than an exception after the money is spent."""
    if prices is None or model_version == OFFLINE_MODEL_VERSION:
        return Decimal("0")  # the offline analyzer never bills
    for model in dict.fromkeys(m for m in (model_version, request.model) if m):
        try:
            return prices.cost(model, usage, at)
        except Exception:  # UnknownModel, or no price on that date
            continue
    log.warning(
        "no price for %r (asked for %r): call booked at $0; add the model to "
        "config/pricing.toml and the ledger's figures will be short by this call",
        model_version, request.model,
    )  # fmt: skip
    return Decimal("0")


@contextlib.asynccontextmanager
async def keep_hold(budget: SpendLimit | None, reservation: Any) -> AsyncIterator[None]:
    """Extend the budget hold every third of its life while the call runs, so a call that
    outlasts `hold_s` keeps its reservation (like `Limiter.hold` for the permit)."""
    extend = getattr(budget, "extend", None)
    hold_s = getattr(budget, "hold_s", None)
    if extend is None or not hold_s or reservation is None:
        yield
        return
    async with renewing(float(hold_s) / 3, lambda: extend(reservation), "a budget hold"):
        yield


async def settle_hold(budget: SpendLimit | None, reservation: Any, cost_usd: Decimal) -> None:
    """Settle the call's hold at `cost_usd` (no budget or no hold: nothing to do). A settle
    that fails (Redis away longer than its retries) is logged with the call's id and raised:
    the hold stays open, and is booked from the call's ledger row when its job's run ends or
    its lease is recovered (pipeline/ledger/lost_holds.py settle_lost_holds)."""
    if budget is None or reservation is None:  # the offline analyzer holds nothing
        return
    try:
        await budget.settle(reservation, cost_usd)
    except Exception as exc:
        log.warning(
            "call %s: its budget hold could not be settled at %s (%s: %s); it is booked "
            "from the ledger when the job's run ends",
            getattr(reservation, "token", "?"), dollars(cost_usd), type(exc).__name__, exc,
        )  # fmt: skip
        raise


def report_overrun(record: CallAttempt, request: LLMRequest) -> str:
    """Log an overrun (a bill above its reservation) as an error; returns the note for the
    call's ledger row."""
    over = record.cost_usd - record.estimated_cost_usd
    log.error(
        "call %s (%s, job %s, batch %s) was billed %s, %s over its reservation %s; it is "
        "booked in full and its budgets stop admitting calls until a person raises them",
        record.attempt_id, request.model, record.job_id, record.batch_id,
        dollars(record.cost_usd), dollars(over), dollars(record.estimated_cost_usd),
    )  # fmt: skip
    return (f"{OVERRUN_NOTE}: billed {dollars(record.cost_usd)}, reserved "
            f"{dollars(record.estimated_cost_usd)}")  # fmt: skip


async def warn_usage_missing(
    redis: Redis, keys: Keys, booked: BookedUsage, record: CallAttempt
) -> None:
    """Once per batch (a Redis flag, so once across workers and restarts): the provider left
    usage out and the call was booked at its bound."""
    scope = record.batch_id or "(no batch)"
    try:
        first = bool(
            await redis.set(keys.notice("usage-missing", scope), "1", nx=True, ex=NOTICE_TTL_S)
        )
    except Exception:  # a warning is not worth failing a paid call over
        first = True
    if first:
        log.warning(
            "batch %s: the provider answered without %s; call %s booked at its bound "
            "(%d input tokens counted, %d output) = %s and flagged usage_missing in the "
            "ledger; further calls of this batch are flagged without this warning",
            scope, ", ".join(booked.missing), record.attempt_id, booked.usage.input_tokens,
            booked.usage.output_tokens + booked.usage.thinking_tokens, dollars(record.cost_usd),
        )  # fmt: skip
