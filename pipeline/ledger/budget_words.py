"""A budget's refusals in words: the scope as a person knows it (a batch by its short id, a
day or month by its date), what was spent and asked for, and what to do — the command that
admits the refused call, or the setting to raise.
"""

from __future__ import annotations

from decimal import Decimal

from pipeline.errors import BudgetExceeded
from pipeline.money import at_least_usd, dollars, format_usd


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


def held_words(held: Decimal) -> str:
    """How the advice counts calls in flight: nothing when there are none."""
    return f" with {dollars(held)} held by calls in flight" if held > 0 else ""


def _advice(kind: str, name: str, needed: Decimal, held: Decimal, what: str) -> str:
    """What to do about a refusal of `what` no wait can lift; `needed` (USD) is the limit
    that would admit it (`admitting_usd`), `held` the part of it calls in flight hold."""
    if kind == "batch":
        ref = name.removeprefix("batch:")[:12]
        return (f"the job ends over_budget and nothing more is charged; "
                f"`pipeline budget {ref} --set {format_usd(needed)}` admits {what}"
                f"{held_words(held)} (the batch's other documents may need more: "
                f"`pipeline submit --dry-run` prints each one's worst case), then "
                f"`pipeline retry {ref} --over-budget`")  # fmt: skip
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


RAISE = {  # what lifts a stop after an overrun, by scope kind
    "batch": "raise the batch's limit (Budget.raise_limit) above it",
    "day": "raise PIPELINE_BUDGET_DAY_USD above it",
    "month": "raise PIPELINE_BUDGET_MONTH_USD above it",
}
