"""`cost_report` and `pipeline costs` over a seeded ledger, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import Engine
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.ledger import db
from pipeline.ledger.recorder import SqlRecorder
from pipeline.ledger.report import cost_report, daily_spend_by_model, parse_when, percentile
from pipeline.ledger.windows import ledger_window_spend
from pipeline.llm.attempts import Outcome
from pipeline.redis.keys import Keys
from tests.ledger.conftest import attempt, settle
from tests.support import ROOT
from tests.support.backends import free_port
from tests.support.cli import run_cli


def _at(day: str, hour: int = 12) -> datetime:
    return datetime.fromisoformat(f"{day}T{hour:02d}:00:00+00:00")


@pytest.fixture
async def seeded(ledger_url: str, aredis: aioredis.Redis, keys: Keys) -> AsyncIterator[Engine]:
    engine = db.create_ledger_engine(ledger_url)
    rec = SqlRecorder(engine, aredis, keys)
    await rec.upsert_document("1" * 64, document_id="d1", pages=10)
    await rec.upsert_document("2" * 64, document_id="d2", pages=5)
    rows: list[tuple[str, str, str, Outcome, str, float | None, str]] = [
        # day, model, document, outcome, cost, latency_s, batch
        ("2026-11-01", "model-a", "d1", Outcome.OK, "0.10", 1.0, "b1"),
        ("2026-11-01", "model-a", "d1", Outcome.ERROR, "0.05", 2.0, "b1"),
        ("2026-11-01", "model-b", "d2", Outcome.OK, "0.20", 3.0, "b2"),
        ("2026-11-02", "model-a", "d2", Outcome.RATE_LIMITED, "0", 0.5, "b2"),
        ("2026-10-15", "model-a", "d1", Outcome.OK, "1.00", 9.0, "b0"),
    ]
    for day, model, doc, outcome, cost, latency, batch in rows:
        call = attempt(job_id=f"job-{doc}", batch_id=batch, document_id=doc, model=model,
                       started_at=_at(day))  # fmt: skip
        await rec.started(call)
        await rec.settled(settle(call, outcome, cost, latency_s=latency, input_tokens=100,
                                 output_tokens=10, thinking_tokens=5, cached_tokens=1))  # fmt: skip
    lost = attempt(job_id="job-lost", batch_id="b2", document_id="d2", model="model-b",
                   started_at=_at("2026-11-02"), estimated="0.07")  # fmt: skip
    await rec.started(lost)
    assert await rec.mark_abandoned("job-lost") == 1
    yield engine
    engine.dispose()


def _report(engine: Engine, by: str) -> dict[str, Any]:
    with db.session_factory(engine)() as session:
        return cost_report(
            session, parse_when("2026-11-01"), parse_when("2026-11-02", end=True), by
        )


def test_totals_and_rows(seeded: Engine) -> None:
    report = _report(seeded, "day")
    total = report["total"]
    assert total["calls"] == 5
    assert (total["input_tokens"], total["output_tokens"]) == (400, 40)
    assert (total["thinking_tokens"], total["cached_tokens"]) == (20, 4)
    assert Decimal(total["cost_usd"]) == Decimal("0.42")
    assert Decimal(total["wasted_usd"]) == Decimal("0.12")  # error 0.05 + abandoned 0.07
    assert (total["documents"], total["pages"]) == (2, 15)
    assert Decimal(total["cost_per_document_usd"]) == Decimal("0.21")
    assert Decimal(total["cost_per_page_usd"]) == Decimal("0.028")
    assert total["latency_p50_s"] == 1.5
    assert [r["key"] for r in report["rows"]] == ["2026-11-01", "2026-11-02"]
    assert Decimal(report["rows"][1]["cost_usd"]) == Decimal("0.07")
    assert report["rows"][1]["latency_p95_s"] == 0.5


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        ("model", {"model-a": "0.15", "model-b": "0.27"}),
        ("batch", {"b1": "0.15", "b2": "0.27"}),
        ("document", {"d1": "0.15", "d2": "0.27"}),
        ("status", {"ok": "0.30", "error": "0.05", "rate_limited": "0", "abandoned": "0.07"}),
    ],
)
def test_group_by(seeded: Engine, by: str, expected: dict[str, str]) -> None:
    rows = _report(seeded, by)["rows"]
    assert {r["key"]: Decimal(r["cost_usd"]) for r in rows} == {
        k: Decimal(v) for k, v in expected.items()
    }


def test_cli_json(seeded: Engine) -> None:
    result = CliRunner().invoke(
        app, ["costs", "--since", "2026-11-01", "--until", "2026-11-02", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) >= {"total", "rows"}
    assert doc["total"]["cost_usd"] == "0.420000000" and doc["total"]["wasted_usd"] == "0.120000000"
    assert doc["total"] == _report(seeded, "day")["total"]
    assert all({"key", "calls", "cost_usd", "wasted_usd"} <= set(r) for r in doc["rows"])
    # `--json`, as status, results, budget and retry take it: the same document
    same = CliRunner().invoke(app, ["costs", "--since", "2026-11-01", "--until", "2026-11-02",
                                    "--json"])  # fmt: skip
    assert same.exit_code == 0 and json.loads(same.stdout) == doc, same.output
    both = CliRunner().invoke(app, ["costs", "--json", "--format", "csv"])
    assert both.exit_code == 2 and "ask for two formats" in both.output


def test_cli_csv_and_table(seeded: Engine) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["costs", "--by", "model", "--format", "csv"])
    assert result.exit_code == 0, result.output
    table = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["key"] for r in table] == ["model-a", "model-b", "TOTAL"]
    assert Decimal(table[-1]["cost_usd"]) == Decimal("1.42")  # no window: October counts too
    assert table[0]["calls"] == "4"

    result = runner.invoke(app, ["costs", "--since", "2026-11-01", "--by", "status"])
    assert result.exit_code == 0, result.output
    assert "TOTAL" in result.stdout and "abandoned" in result.stdout
    assert "0.420000000" in result.stdout


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_cli_chart(seeded: Engine, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"spend{suffix}"
    result = CliRunner().invoke(app, ["costs", "--format", "json", "--chart", str(out)])
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert len(data) > 1000
    assert data.startswith(b"\x89PNG") if suffix == ".png" else b"<svg" in data


def test_chart_without_matplotlib_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.errors import MissingExtra
    from pipeline.ledger.chart import CHART_EXTRA, write_spend_chart

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the extra were not installed
    assert "'pipeline[chart]'" in CHART_EXTRA  # the extra pyproject.toml defines
    with pytest.raises(MissingExtra, match=re.escape(CHART_EXTRA)):
        write_spend_chart({}, tmp_path / "c.png")


def test_cli_rejects_bad_input(pipeline_env: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["costs", "--since", "yesterday"])
    assert result.exit_code == 2
    assert "YYYY-MM-DD" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["costs", "--by", "weather"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["costs", "--chart", str(tmp_path / "x.gif")])
    assert result.exit_code == 2
    assert "must end in .png or .svg" in result.output


def test_the_chart_suffixes_are_documented_where_chart_is() -> None:
    """The README's `pipeline costs` usage and `--help` both say what --chart FILE needs."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    usage = readme[readme.index("[--chart FILE]`"):][:400]
    assert "`.png`" in usage and "`.svg`" in usage, usage
    helped = CliRunner().invoke(app, ["costs", "--help"], env={"COLUMNS": "200"})
    assert "must end in .png or .svg" in " ".join(helped.output.split())


def test_cli_errors_are_messages_not_tracebacks(pipeline_env: dict[str, str]) -> None:
    """Through the real entry point (`main()`), as a user runs it."""
    for args, code in ((["costs", "--since", "2026-13-01"], 2), (["costs", "--by", "x"], 2)):
        proc = run_cli(pipeline_env, *args)
        assert proc.returncode == code, proc.stderr
        assert "Traceback" not in proc.stderr and "Invalid value" in proc.stderr
    bad_db = {**pipeline_env,
              "PIPELINE_DATABASE_URL": f"postgresql://nobody@127.0.0.1:{free_port()}/x"}
    proc = run_cli(bad_db, "costs")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "PIPELINE_DATABASE_URL" in proc.stderr


def test_percentile_and_dates() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([1.0, 2.0], 0.95) == pytest.approx(1.95)
    assert parse_when("2026-11-21", end=True) == datetime(2026, 11, 22, tzinfo=UTC)
    assert parse_when("2026-11-21T10:00:00Z") == datetime(2026, 11, 21, 10, tzinfo=UTC)


async def test_a_rehearsals_calls_are_shown_apart(
    ledger_url: str, aredis: aioredis.Redis, keys: Keys
) -> None:
    """The emulator's calls are priced as Gemini bills them and never billed: the report
    says how much of its total they are, and `--by provider` shows them apart."""
    engine = db.create_ledger_engine(ledger_url)
    try:
        rec = SqlRecorder(engine, aredis, keys)
        for provider, cost in (("gemini", "0.10"), ("emulator", "0.05"), ("emulator", "0.02")):
            call = attempt(job_id=f"job-{provider}", started_at=_at("2026-11-03"))
            call.provider = provider
            await rec.started(call)
            await rec.settled(settle(call, Outcome.OK, cost))
        await rec.flush()
        report = _report_window(engine, "provider")
        assert [(r["key"], r["cost_usd"]) for r in report["rows"]] == [
            ("emulator", "0.070000000"), ("gemini", "0.100000000")]
        assert report["rehearsal_usd"] == report["total"]["rehearsal_usd"] == "0.070000000"
        assert report["total"]["cost_usd"] == "0.170000000"
        assert [r["rehearsal_usd"] for r in report["rows"]] == ["0.070000000", "0.000000000"]
        csv = CliRunner().invoke(app, ["costs", "--since", "2026-11-03", "--by", "provider",
                                       "--format", "csv"])  # fmt: skip
        assert csv.exit_code == 0, csv.output
        lines = [line.split(",") for line in csv.stdout.splitlines()]
        column = lines[0].index("rehearsal_usd")  # a spreadsheet can leave it out of a sum
        assert [(row[0], row[column]) for row in lines[1:]] == [
            ("emulator", "0.070000000"), ("gemini", "0.000000000"), ("TOTAL", "0.070000000")]
        table = CliRunner().invoke(app, ["costs", "--since", "2026-11-03"])
        assert table.exit_code == 0, table.output
        assert "of the total, $0.070000000 is the emulator's" in table.stdout
    finally:
        engine.dispose()


def _report_window(engine: Engine, by: str) -> dict[str, Any]:
    with db.session_factory(engine)() as session:
        return cost_report(session, parse_when("2026-11-03"), None, by)


async def test_calls_not_settled_are_shown_apart_not_as_spend(
    ledger_url: str, aredis: aioredis.Redis, keys: Keys
) -> None:
    """A call still running (or waiting in a Gemini batch job) carries its worst case on its
    row until it settles: the report keeps it out of the spend and says what may come."""
    engine = db.create_ledger_engine(ledger_url)
    try:
        rec = SqlRecorder(engine, aredis, keys)
        done = attempt(job_id="job-done", started_at=_at("2026-11-04"))
        await rec.started(done)
        await rec.settled(settle(done, Outcome.OK, "0.01"))
        running = attempt(job_id="job-running", started_at=_at("2026-11-04"), estimated="0.05")
        running.cost_usd = Decimal("0.05")  # as a Batch Mode request is booked before it is paid
        await rec.started(running)
        await rec.flush()
        with db.session_factory(engine)() as session:
            total = cost_report(session, parse_when("2026-11-04"), None, "day")["total"]
        assert (total["calls"], total["cost_usd"]) == (1, "0.010000000")
        assert (total["in_flight_calls"], total["in_flight_usd"]) == (1, "0.050000000")
        table = CliRunner().invoke(app, ["costs", "--since", "2026-11-04"])
        assert "1 call not settled yet" in table.stdout and "$0.050000000" in table.stdout
    finally:
        engine.dispose()


async def test_a_call_reserved_before_midnight_is_reported_in_its_reservations_day(
    ledger_url: str, aredis: aioredis.Redis, keys: Keys
) -> None:
    """The day budget counts a call in the day its reservation named (budget_at), and its row
    can start just after midnight: the report, its --since range, the chart's days and the
    windows shown put it in that same day, not the next."""
    engine = db.create_ledger_engine(ledger_url)
    try:
        rec = SqlRecorder(engine, aredis, keys)
        late = attempt(job_id="job-late",
                       started_at=datetime(2026, 11, 6, 0, 0, 0, 200_000, tzinfo=UTC))  # fmt: skip
        late.budget_at = datetime(2026, 11, 5, 23, 59, 59, 900_000, tzinfo=UTC)
        await rec.started(late)
        await rec.settled(settle(late, Outcome.OK, "0.02"))
        await rec.flush()
        with db.session_factory(engine)() as session:
            rows = cost_report(session, None, None, "day")["rows"]
            assert [(r["key"], r["cost_usd"]) for r in rows] == [("2026-11-05", "0.020000000")]
            assert cost_report(session, parse_when("2026-11-06"), None, "day")["total"][
                "calls"] == 0  # fmt: skip
            assert list(daily_spend_by_model(session)) == ["2026-11-05"]
        day_of = ledger_window_spend(engine, datetime(2026, 11, 5, 12, tzinfo=UTC))["day"]
        next_day = ledger_window_spend(engine, datetime(2026, 11, 6, 12, tzinfo=UTC))["day"]
        assert (day_of, next_day) == (Decimal("0.02"), Decimal(0))
    finally:
        engine.dispose()


async def test_the_by_provider_hint_is_said_once_beside_rehearsal_and_offline_calls(
    ledger_url: str, aredis: aioredis.Redis, keys: Keys
) -> None:
    """With both the emulator's and the offline analyzer's calls in a window, the table says
    what each is, and names `--by provider` once (a fresh user saw it twice)."""
    engine = db.create_ledger_engine(ledger_url)
    try:
        rec = SqlRecorder(engine, aredis, keys)
        for provider, cost in (("emulator", "0.05"), ("offline", "0")):
            call = attempt(job_id=f"job-{provider}", started_at=_at("2026-11-03"))
            call.provider = provider
            await rec.started(call)
            await rec.settled(settle(call, Outcome.OK, cost))
        await rec.flush()
        table = CliRunner().invoke(app, ["costs", "--since", "2026-11-03"])
        assert table.exit_code == 0, table.output
        assert "is the emulator's" in table.stdout and "offline analyzer's" in table.stdout
        assert table.stdout.count("`--by provider` shows them apart") == 1, table.stdout
    finally:
        engine.dispose()
