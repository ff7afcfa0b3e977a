"""How money is shown: one formatter for every table, CSV, JSON body, status line and page.

`str(Decimal)` switches to scientific notation for small amounts (`0E-9`, `5.44E-7`), which
a reader cannot compare by eye and a spreadsheet may read as text. Everything that prints a
dollar amount goes through `format_usd`, so the same amount always reads the same way.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

# The ledger's precision (Numeric(18, 9)): machine outputs keep every nano-dollar.
LEDGER_PLACES = 9
# What people read in a one-line summary (`run`, `follow`, the dashboard).
DISPLAY_PLACES = 6


def to_decimal(value: Decimal | float | int | str | None) -> Decimal:
    """`value` as a Decimal (None is 0). A float (SQLite's NUMERIC) goes through its repr,
    which rounds back to the nano-dollar the ledger wrote."""
    if value is None:
        return Decimal(0)
    if isinstance(value, Decimal):
        return value
    return Decimal(str(value))


def format_usd(value: Decimal | float | int | str | None, places: int = LEDGER_PLACES) -> str:
    """`value` in USD as fixed-point text with exactly `places` decimals, rounded half up:
    `format_usd(Decimal("5.44E-7"))` is "0.000000544", `format_usd(0, 6)` is "0.000000".
    JSON bodies carry this string, never a float. Raises ValueError for NaN or infinity."""
    amount = to_decimal(value)
    if not amount.is_finite():
        raise ValueError(f"not an amount of money: {value!r}")
    quantum = Decimal(1).scaleb(-places)
    rounded = amount.quantize(quantum, rounding=ROUND_HALF_UP)
    if rounded == 0:
        rounded = abs(rounded)  # never "-0.000000"
    return f"{rounded:.{places}f}"


def display_usd(value: Decimal | float | int | str | None) -> str:
    """`value` as people read it in tables and progress lines: DISPLAY_PLACES decimals."""
    return format_usd(value, DISPLAY_PLACES)
