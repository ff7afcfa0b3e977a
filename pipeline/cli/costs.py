"""`pipeline costs` and `pipeline db upgrade`: the ledger's commands."""

from __future__ import annotations

import json
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli.common import make_console
from pipeline.errors import InputError
from pipeline.money import dollars
from pipeline.settings import get_settings
from pipeline.words import counted

db_app = typer.Typer(help="Ledger database maintenance.", no_args_is_help=True)


class By(StrEnum):
    day = "day"
    model = "model"
    batch = "batch"
    document = "document"
    status = "status"
    mode = "mode"
    provider = "provider"


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations (workers also do this on first use)."""
    from pipeline.ledger import db
    settings = get_settings()
    engine = db.get_engine(settings, upgrade=False)
    try:
        revision = db.upgrade(engine)
    finally:
        engine.dispose()
    where = engine.url.render_as_string(hide_password=True)
    typer.echo(f"ledger database {where} is at revision {revision}")


def _date(value: str | None, *, end: bool, hint: str) -> Any:
    from pipeline.ledger.report import parse_when
    if value is None:
        return None
    try:
        return parse_when(value, end=end)
    except InputError as exc:
        raise typer.BadParameter(str(exc), param_hint=hint) from None


def costs(
    since: str | None = typer.Option(None, "--since", help="first day (YYYY-MM-DD or ISO)"),
    until: str | None = typer.Option(None, "--until", help="last day, inclusive"),
    by: By = typer.Option(By.day, "--by", help="group rows by"),
    fmt: Format = typer.Option(Format.table, "--format", help="output format"),
    as_json: bool = typer.Option(
        False, "--json", help="Print JSON (the same as --format json, as other commands take it)."
    ),
    chart: Path | None = typer.Option(
        None, "--chart",
        help="also draw spend per day by model and provider to FILE, which must end in .png or .svg"
    ),
) -> None:
    """Calls, tokens, cost and wasted cost from the ledger."""
    if as_json:
        if fmt not in (Format.table, Format.json):
            raise typer.BadParameter(f"--json and --format {fmt.value} ask for two formats: "
                                     "give one", param_hint="--json")  # fmt: skip
        fmt = Format.json
    from pipeline.ledger import db
    from pipeline.ledger.cost_exports import name_documents
    from pipeline.ledger.report import cost_report, daily_spend_by_model
    start = _date(since, end=False, hint="--since")
    end = _date(until, end=True, hint="--until")
    if start is not None and end is not None and start >= end:
        raise typer.BadParameter(
            f"{since} is not before the end of --until {until}: give a --since on or before "
            "the --until day", param_hint="--since",
        )  # fmt: skip
    if chart is not None and chart.suffix.lower() not in (".png", ".svg"):
        raise typer.BadParameter(
            f"the chart file must end in .png or .svg (the suffix picks the image format), "
            f"not {chart.suffix or 'no suffix'!r}: e.g. --chart spend.png", param_hint="--chart",
        )  # fmt: skip
    engine = db.get_engine(get_settings())
    try:
        with db.session_factory(engine)() as session:
            report = name_documents(session, cost_report(session, start, end, by.value))
            spend = daily_spend_by_model(session, start, end) if chart else None
            if by is By.mode:
                report["saved_usd"] = _saved(session, start, end)
    finally:
        engine.dispose()
    if fmt is Format.json:
        typer.echo(json.dumps(report, indent=2))
    elif fmt is Format.csv:
        typer.echo(_csv(report), nl=False)
    else:
        _table(report)
        if report["total"]["in_flight_calls"]:
            typer.echo(f"{counted(report['total']['in_flight_calls'], 'call')} not settled yet "
                       f"(still running, or in a Gemini batch job): up to "
                       f"{dollars(report['total']['in_flight_usd'])} more, their worst case, held "
                       "against budgets and not in the totals above")  # fmt: skip
        # with --by provider the rows above already show them apart
        apart = "" if by is By.provider else "; `--by provider` shows them apart"
        if Decimal(report["rehearsal_usd"]):
            typer.echo(f"of the total, {dollars(report['rehearsal_usd'])} is the emulator's "
                       f"(rehearsal calls priced as Gemini bills them, never billed){apart}")
        offline = int(report["offline_calls"])
        if offline:  # the hint once, on the last of the two lines
            apart = "" if Decimal(report["rehearsal_usd"]) else apart
            typer.echo(f"of the {counted(report['total']['calls'], 'call')}, "
                       f"{offline} {'was' if offline == 1 else 'were'} the offline analyzer's "
                       f"(no LLM asked, {dollars(report['offline_usd'])} booked; tokens are "
                       f"its estimate of the text's size){apart}")  # fmt: skip
        if "saved_usd" in report:
            if any(row["key"] == "batch" for row in report["rows"]):
                typer.echo(f"Batch Mode saved {dollars(report['saved_usd'])} against "
                           "interactive prices")  # fmt: skip
            else:  # a $0 saving would read as Batch Mode having bought nothing
                typer.echo("no Batch Mode calls in this range: nothing to compare with "
                           "interactive prices")  # fmt: skip
    if chart is not None and spend is not None:
        from pipeline.ledger.chart import write_spend_chart

        write_spend_chart(spend, chart)
        typer.echo(f"chart written to {chart}", err=True)


def _saved(session: Any, start: Any, end: Any) -> str:
    from pipeline.ledger.savings import batch_savings
    from pipeline.llm.pricing import PriceTable
    from pipeline.money import format_usd

    full, paid = batch_savings(session, PriceTable.load(), start, end)
    return format_usd(full - paid)


def _csv(report: dict[str, Any]) -> str:
    from pipeline.ledger.cost_exports import report_csv

    return report_csv(report)


def _table(report: dict[str, Any]) -> None:
    table = Table(title=f"LLM spend by {report['by']}")
    columns = [
        ("key", report["by"]), ("calls", "calls"), ("input_tokens", "in tok"),
        ("output_tokens", "out tok"), ("thinking_tokens", "think tok"),
        ("cached_tokens", "cached tok"), ("cost_usd", "cost $"), ("wasted_usd", "wasted $"),
        ("cost_per_document_usd", "$/doc"), ("cost_per_page_usd", "$/page"),
        ("latency_p50_s", "p50 s"), ("latency_p95_s", "p95 s"),
    ]  # fmt: skip
    for name, title in columns:
        table.add_column(title, justify="left" if name == "key" else "right")
    for row in [*report["rows"], {"key": "TOTAL", **report["total"]}]:
        if row.get("name"):  # by document: the file name, the hash shortened beside it
            row = {**row, "key": f"{row['name']} ({row['key'][:12]})"}
        table.add_row(*("-" if row[name] is None else str(row[name]) for name, _ in columns),
                      style="bold" if row["key"] == "TOTAL" else None)  # fmt: skip
    out = make_console()  # never cut off a terminal; on one, wide enough for the columns
    (Console(width=200) if out.is_terminal else out).print(table)
