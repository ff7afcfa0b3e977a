"""A budget's refusals in words: the scope as a person knows it (a batch by its short id, a
day or month by its date), what was spent and asked for, and what to do — the command that
admits the refused call (and, for API users, the request that does the same), or the
setting to raise.
"""

from __future__ import annotations

from decimal import Decimal

from pipeline.errors import BudgetExceeded
from pipeline.money import LEDGER_PLACES, at_least_usd, dollars, format_usd
from pipeline.words import retry_command

NANO_USD = Decimal(1).scaleb(-LEDGER_PLACES)  # the least step of a limit a person sets


def scope_words(kind: str, name: str) -> str:
    """A scope as a person knows it: a batch by its short id (what `pipeline budget` and
    `pipeline retry` take), a day or a month by its date; `name` is the scope's key name
    (e.g. "batch:<id>", "day:2026-11-21")."""
    plain = name.removeprefix(f"{kind}:")
    return f"the budget of batch {plain[:12]}" if kind == "batch" else f"{kind} budget {plain}"


def admitting_usd(spent: Decimal, held: Decimal, worst: Decimal) -> Decimal:
    """The least limit that admits a call of worst case `worst` (USD) in a scope that has
    `spent` settled and `held` reserved by calls in flight: a reservation must fit beside
    both, since a hold settles at most at its own amount. Every amount the product tells a
    person to set is this sum, taken when it is said, rounded up to a nano-dollar."""
    return at_least_usd(spent + held + worst)


def lifting_usd(stopped_at: Decimal, spent: Decimal, held: Decimal, worst: Decimal) -> Decimal:
    """The least limit that lifts a stop an overrun put on a scope at limit `stopped_at` (a
    limit above it: pipeline/ledger/lua/budget_raise.lua) and admits a call of worst case
    `worst` beside `spent` and `held` (`admitting_usd`); all USD."""
    return max(admitting_usd(spent, held, worst), at_least_usd(stopped_at) + NANO_USD)


def set_command(ref: str, amount: Decimal) -> str:
    """The two doors that set a batch's limit to `amount`: the command, and for API users
    the request (`ref` is the batch's short id)."""
    usd = format_usd(amount)
    return (f"`pipeline budget {ref} --set {usd}` (over the HTTP API: PATCH /batches/{ref} "
            f'with {{"budget_usd": "{usd}"}})')  # fmt: skip


def held_words(held: Decimal) -> str:
    """How the advice counts calls in flight: nothing when there are none."""
    return f" with {dollars(held)} held by calls in flight" if held > 0 else ""


def _advice(kind: str, name: str, needed: Decimal, held: Decimal, what: str) -> str:
    """What to do about a refusal of `what` no wait can lift; `needed` (USD) is the limit
    that would admit it (`admitting_usd`), `held` the part of it calls in flight hold."""
    if kind == "batch":
        ref = name.removeprefix("batch:")[:12]
        return (f"the job ends over_budget and nothing more is charged; "
                f"{set_command(ref, needed)} admits {what}{held_words(held)} (the batch's "
                f"other documents may need more: `pipeline submit --dry-run` prints each "
                f"one's worst case), then {retry_command(ref, 'over-budget')}")  # fmt: skip
    if kind == "day":
        return "raise PIPELINE_BUDGET_DAY_USD or wait for the UTC day to turn (00:00 UTC)"
    return "raise PIPELINE_BUDGET_MONTH_USD or wait for the next UTC month"


def would_exceed(
    kind: str, name: str, spent: Decimal, worst: Decimal, limit: Decimal, what: str = "this call",
    held: Decimal = Decimal(0),
) -> BudgetExceeded:
    """The refusal of `what` (worst case `worst` USD) by a scope whose settled spend alone
    leaves no room for it: waiting cannot help, so the advice is to raise the limit, to one
    that fits `what` beside the spend and the `held` (USD) of calls in flight."""
    return BudgetExceeded(
        f"{scope_words(kind, name)} would be exceeded: {dollars(spent)} spent + "
        f"{dollars(worst)} worst case for {what} > limit {dollars(limit)}; "
        f"{_advice(kind, name, admitting_usd(spent, held, worst), held, what)}",
        scope=kind, scope_name=name, spent_usd=spent, limit_usd=limit, reserved_usd=held,
    )  # fmt: skip


def stopped_refusal(kind: str, name: str, spent: Decimal, limit: Decimal, stopped_at: Decimal,
                    worst: Decimal, held: Decimal = Decimal(0)) -> BudgetExceeded:
    """The refusal of a call (worst case `worst` USD) by a scope an overrun stopped at limit
    `stopped_at`: it admits no call until a person sets a limit above that. For a batch the
    advice is the command (and the API request) with an amount that both lifts the stop and
    admits the call beside `spent` and `held` (`lifting_usd`), then the retry; a retry
    alone meets the same stop. A day or month names its setting."""
    if kind == "batch":
        ref = name.removeprefix("batch:")[:12]
        advice = (f"the job ends over_budget and nothing more is charged; "
                  f"{set_command(ref, lifting_usd(stopped_at, spent, held, worst))} lifts the "
                  f"stop and admits this call{held_words(held)}, then "
                  f"{retry_command(ref, 'over-budget')}; a retry before that meets the same "
                  f"stop, and `pipeline status {ref}` shows the overrun")  # fmt: skip
    else:
        setting = "PIPELINE_BUDGET_DAY_USD" if kind == "day" else "PIPELINE_BUDGET_MONTH_USD"
        advice = f"raise {setting} above {dollars(stopped_at)}"
    return BudgetExceeded(
        f"{scope_words(kind, name)} stopped admitting calls after a call was billed more than "
        f"its reservation ({dollars(spent)} spent, limit {dollars(limit)}); {advice}",
        scope=kind, stopped=True, scope_name=name,
    )  # fmt: skip
