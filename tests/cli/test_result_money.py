"""What `pipeline status` and `pipeline results` say about money, as a user runs them: every
amount at the ledger's nine decimals (an offline result's $0 included), a row's `cost_usd` is
what that batch paid (so the rows of every batch's export sum to what was spent, a reused
result counted once, under `paid_elsewhere_usd` where it was not paid), and the two costs a
record carries have two names. Real `pipeline` processes, real Redis, a SQLite ledger."""

from __future__ import annotations

import csv
import io
import json
import re
from decimal import Decimal
from typing import Any

from sqlalchemy import create_engine, text

from tests.support.cli import EXAMPLES, run_cli

INVOICE = next(p for p in EXAMPLES if p.endswith("invoice.pdf"))
NINE = re.compile(r"\d+\.\d{9}")
PAID, WASTED = Decimal("0.0081887"), Decimal("0.0009911")  # as a paid run's rows would say


def _ok(env: dict[str, str], *args: str) -> str:
    r = run_cli(env, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _results(env: dict[str, str], label: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(_ok(env, "results", label, "--json"))
    lines = [json.loads(ln) for ln in _ok(env, "results", label, "--format", "jsonl").splitlines()]
    assert lines == records  # the same records either way
    return records


def _money_fields(record: Any, path: str = "") -> dict[str, Any]:
    """Every field of `record` (nested) whose name ends in _usd, by its path."""
    found: dict[str, Any] = {}
    if isinstance(record, dict):
        for key, value in record.items():
            if key.endswith("_usd"):
                found[f"{path}{key}"] = value
            found.update(_money_fields(value, f"{path}{key}."))
    elif isinstance(record, list):
        for n, value in enumerate(record):
            found.update(_money_fields(value, f"{path}{n}."))
    return found


def _as_if_paid(env: dict[str, str]) -> None:
    """The first batch's call as a paid run's: its answer at PAID, and one more call whose
    answer was thrown away (an invalid answer before the repair) at WASTED."""
    engine = create_engine(env["PIPELINE_DATABASE_URL"])
    try:
        with engine.begin() as conn:
            (call_id,) = conn.execute(text("SELECT id FROM llm_calls")).one()
            conn.execute(text("UPDATE llm_calls SET cost_usd = :c"), {"c": str(PAID)})
            cols = [r[1] for r in conn.execute(text("PRAGMA table_info(llm_calls)"))]
            picked = ", ".join(":id" if c == "id" else ":o" if c == "outcome" else ":c"
                               if c == "cost_usd" else c for c in cols)  # fmt: skip
            copy = {"id": "wasted-1", "o": "invalid", "c": str(WASTED), "src": call_id}
            conn.execute(text(f"INSERT INTO llm_calls ({', '.join(cols)}) SELECT {picked} "
                              "FROM llm_calls WHERE id = :src"), copy)  # fmt: skip
    finally:
        engine.dispose()


def test_results_money_is_fixed_point_and_a_reused_result_is_paid_once(
    pipeline_env: dict[str, str],
) -> None:
    env = pipeline_env
    _ok(env, "run", INVOICE, "--label", "first")
    offline = _results(env, "first")
    (record,) = offline
    money = _money_fields(record)
    # every amount, the offline analyzer's $0 included, as format_usd writes it
    assert money and all(NINE.fullmatch(v) for v in money.values()), money
    assert record["analysis"]["used_answers_cost_usd"] == "0.000000000"
    assert record["analysis"]["parts"][0]["used_answers_cost_usd"] == "0.000000000"
    assert "cost_usd" not in record["analysis"]  # one name per cost, not two cost_usd

    _as_if_paid(env)
    _ok(env, "run", INVOICE, "--label", "second")  # the same content: answered, not paid again
    first, second = _results(env, "first")[0], _results(env, "second")[0]
    assert (first["cost_usd"], first["wasted_usd"]) == (f"{PAID + WASTED:.9f}", f"{WASTED:.9f}")
    assert first["paid_elsewhere_usd"] == "0.000000000"
    assert (second["cost_usd"], second["paid_elsewhere_usd"]) == (
        "0.000000000", f"{PAID + WASTED:.9f}")  # fmt: skip
    # Summing cost_usd over both batches' exports counts each dollar once: their spend.
    spends = [json.loads(_ok(env, "status", b, "--json")) for b in ("first", "second")]
    assert [s["spend_usd"] for s in spends] == [f"{PAID + WASTED:.9f}", "0.000000000"]
    for data in spends:
        assert sum(Decimal(d["cost_usd"]) for d in data["documents"]) == Decimal(data["spend_usd"])
    rows = list(csv.DictReader(io.StringIO(_ok(env, "results", "second", "--format", "csv"))))
    assert (rows[0]["cost_usd"], rows[0]["paid_elsewhere_usd"]) == (
        "0.000000000", f"{PAID + WASTED:.9f}")  # fmt: skip

    shown = _ok(env, "status", "second")
    assert (f"spent $0.000000000 in this batch (${PAID + WASTED:.9f} more was paid in earlier "
            "batches for results reused here: the paid elsewhere column)") in shown, shown
    assert "paid elsewhere USD" in shown
    row = next(ln for ln in shown.splitlines() if "invoice.pdf" in ln)
    assert re.search(rf"complete\s+1\s+0\.000000000\s+0\.000000000\s+{PAID + WASTED:.9f}", row), row
