"""A budget's refusals in words: the scope as a person knows it (a batch by its short id, a
day or month by its date), what was spent and asked for, and what to do — the command that
admits the refused call, or the setting to raise.
"""

from __future__ import annotations

from decimal import Decimal

from pipeline.errors import BudgetExceeded
from pipeline.money import dollars, format_usd


def scope_words(kind: str, name: str) -> str:
    """A scope as a person knows it: a batch by its short id (what `pipeline budget` and
    `pipeline retry` take), a day or a month by its date; `name` is the scope's key name
    (e.g. "batch:<id>", "day:2026-11-21")."""
    plain = name.removeprefix(f"{kind}:")
    return f"the budget of batch {plain[:12]}" if kind == "batch" else f"{kind} budget {plain}"


def _advice(kind: str, name: str, needed: Decimal) -> str:
    """What to do about a refusal no wait can lift; `needed` (USD) is the limit that would
    admit the refused call."""
    if kind == "batch":
        ref = name.removeprefix("batch:")[:12]
        return (f"the job ends over_budget and nothing more is charged; "
                f"`pipeline budget {ref} --set {format_usd(needed)}` admits this call (the "
                f"batch's other documents may need more: `pipeline submit --dry-run` prints "
                f"each one's worst case), then `pipeline retry {ref} --over-budget`")  # fmt: skip
    if kind == "day":
        return "raise PIPELINE_BUDGET_DAY_USD or wait for the UTC day to turn (00:00 UTC)"
    return "raise PIPELINE_BUDGET_MONTH_USD or wait for the next UTC month"


def would_exceed(
    kind: str, name: str, spent: Decimal, worst: Decimal, limit: Decimal, what: str = "this call"
) -> BudgetExceeded:
    """The refusal of `what` (worst case `worst` USD) by a scope whose settled spend alone
    leaves no room for it: waiting cannot help, so the advice is to raise the limit."""
    return BudgetExceeded(
        f"{scope_words(kind, name)} would be exceeded: {dollars(spent)} spent + "
        f"{dollars(worst)} worst case for {what} > limit {dollars(limit)}; "
        f"{_advice(kind, name, spent + worst)}",
        scope=kind, scope_name=name, spent_usd=spent, limit_usd=limit,
    )  # fmt: skip


RAISE = {  # what lifts a stop after an overrun, by scope kind
    "batch": "raise the batch's limit (Budget.raise_limit) above it",
    "day": "raise PIPELINE_BUDGET_DAY_USD above it",
    "month": "raise PIPELINE_BUDGET_MONTH_USD above it",
}
