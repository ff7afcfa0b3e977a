"""How money is shown: one formatter for every table, CSV, JSON body, status line, reason,
log line and page.

`str(Decimal)` switches to scientific notation for small amounts (`0E-9`, `5.44E-7`) and
keeps whatever exponent arithmetic left (`0.0128` beside a limit typed as `0.01`), which a
reader cannot compare by eye and a spreadsheet may read as text. Everything that prints a
dollar amount goes through `format_usd` (a bare amount: a table cell, a JSON string) or
`dollars` (the same with its `$`, in a sentence), so the same amount always reads the same
way, at the ledger's precision: rounding to fewer places could print a refusal as
"$0.000000 spent + $0.000001 > limit $0.000001", which is not what the budget compared.

Foundation layer (imports nothing of the project): the ledger, the LLM layer's log lines, the
services' reasons, the API and the CLI all use it.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

# The ledger's precision (Numeric(18, 9)): every output keeps every nano-dollar.
LEDGER_PLACES = 9


def to_decimal(value: Decimal | float | int | str | None) -> Decimal:
    """`value` as a Decimal (None is 0). A float (SQLite's NUMERIC) goes through its repr,
    which rounds back to the nano-dollar the ledger wrote."""
    if value is None:
        return Decimal(0)
    if isinstance(value, Decimal):
        return value
    return Decimal(str(value))


def format_usd(value: Decimal | float | int | str | None) -> str:
    """`value` in USD as fixed-point text with exactly LEDGER_PLACES decimals, rounded half
    up: `format_usd(Decimal("5.44E-7"))` is "0.000000544", `format_usd(0)` is "0.000000000".
    JSON bodies carry this string, never a float. Raises ValueError for NaN or infinity."""
    amount = to_decimal(value)
    if not amount.is_finite():
        raise ValueError(f"not an amount of money: {value!r}")
    quantum = Decimal(1).scaleb(-LEDGER_PLACES)
    rounded = amount.quantize(quantum, rounding=ROUND_HALF_UP)
    if rounded == 0:
        rounded = abs(rounded)  # never "-0.000000000"
    return f"{rounded:.{LEDGER_PLACES}f}"


def dollars(value: Decimal | float | int | str | None) -> str:
    """`value` as a sentence shows it: "$" and `format_usd`, e.g. "$0.012800000"."""
    return f"${format_usd(value)}"


def at_least_usd(value: Decimal) -> Decimal:
    """`value` rounded *up* to the ledger's precision: an amount a person is told to set as a
    limit. Rounded half up (as `format_usd` shows any amount), a needed $0.0196028001 would
    read $0.019602800, one nano-dollar short of what the reservation compares."""
    return value.quantize(Decimal(1).scaleb(-LEDGER_PLACES), rounding=ROUND_CEILING)
