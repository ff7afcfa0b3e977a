"""Money is printed fixed-point everywhere: the formatter, and the cost report's table, CSV
and JSON over a real ledger (SQLite and PostgreSQL) holding sub-micro-dollar amounts."""

from __future__ import annotations

import csv
import io
import json
import re
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.ledger import db
from pipeline.ledger.recorder import SqlRecorder
from pipeline.llm.attempts import Outcome
from pipeline.money import dollars, format_usd
from pipeline.redis.keys import Keys
from tests.ledger.conftest import attempt, settle

SCIENTIFIC = re.compile(r"\d[eE][-+]?\d")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("0E-9"), "0.000000000"),
        (Decimal("5.44E-7"), "0.000000544"),
        (0, "0.000000000"),
        (None, "0.000000000"),
        (0.0185, "0.018500000"),  # SQLite hands back floats
        ("12.5", "12.500000000"),
        (Decimal("-0.0000000001"), "0.000000000"),  # never "-0"
        (Decimal("1E+3"), "1000.000000000"),
    ],
)
def test_format_usd_is_fixed_point_at_the_ledger_precision(value: object, expected: str) -> None:
    assert format_usd(value) == expected  # type: ignore[arg-type]
    assert dollars(value) == f"${expected}"  # type: ignore[arg-type]


def test_format_usd_refuses_what_is_not_money() -> None:
    with pytest.raises(ValueError, match="not an amount"):
        format_usd(Decimal("NaN"))


async def test_costs_table_csv_and_json_print_tiny_and_zero_amounts_fixed_point(
    ledger_url: str, aredis: aioredis.Redis, keys: Keys
) -> None:
    engine = db.create_ledger_engine(ledger_url)
    rec = SqlRecorder(engine, aredis, keys)
    for outcome, cost in ((Outcome.OK, "0.000000544"), (Outcome.RATE_LIMITED, "0")):
        call = attempt(batch_id="b", document_id="d", model="m")
        await rec.started(call)
        await rec.settled(settle(call, outcome, cost))
    engine.dispose()
    runner = CliRunner()
    out = {fmt: runner.invoke(app, ["costs", "--by", "status", "--format", fmt])
           for fmt in ("table", "csv", "json")}  # fmt: skip
    for fmt, result in out.items():
        assert result.exit_code == 0, result.output
        assert not SCIENTIFIC.search(result.output), (fmt, result.output)
    report = json.loads(out["json"].output)
    rows = {r["key"]: r for r in report["rows"]}
    assert rows["rate_limited"]["cost_usd"] == "0.000000000"
    assert rows["ok"]["cost_usd"] == "0.000000544"
    assert report["total"]["wasted_usd"] == "0.000000000"
    table = list(csv.DictReader(io.StringIO(out["csv"].output)))
    assert {r["key"]: r["cost_usd"] for r in table}["TOTAL"] == "0.000000544"
    assert "0.000000544" in out["table"].output
