"""What the CLI's command modules share: the consoles, option types and the ledger engine."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from sqlalchemy import Engine

# Output that is not a terminal (a log file, CI, a pipe) is read later, in full: Rich would
# lay it out at 80 columns and cut file names and reasons to fit ("examples/docs/scanne…").
# There, tables take the width their contents need.
UNLIMITED_WIDTH = 100_000


def make_console(stream: IO[str] | None = None, *, stderr: bool = False) -> Console:
    """A Rich console on `stream` (default stdout, or stderr): terminal width on a terminal,
    never cutting anything otherwise."""
    from rich.console import Console

    target = stream or (sys.stderr if stderr else sys.stdout)
    try:
        tty = target.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream: write it out in full
        tty = False
    return Console(stderr=stderr, width=None if tty else UNLIMITED_WIDTH)


_CONSOLES: dict[str, Console] = {}


def __getattr__(name: str) -> Any:
    """`console` and `err_console` are made on first import of the name: a worker, which
    prints no tables, never loads Rich (~45 modules: start-up time and memory of every
    worker process)."""
    if name in ("console", "err_console"):
        if name not in _CONSOLES:
            _CONSOLES[name] = make_console(stderr=name == "err_console")
        return _CONSOLES[name]
    raise AttributeError(name)


def print_table(table: Table, out: Console | None = None) -> None:
    """A table on a terminal as Rich draws it; elsewhere at the width its cells need, each
    line without the padding that would trail after its last cell."""
    out = out or __getattr__("console")
    if out.is_terminal:
        out.print(table)
        return
    with out.capture() as captured:
        out.print(table)
    out.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def say_note(note: str) -> None:
    """A note on which batch a command took (a label several batches carry), on stderr so
    that --json, --format and piped output stay whole."""
    if note:
        __getattr__("err_console").print(f"[yellow]note:[/yellow] {note}", highlight=False,
                                         soft_wrap=True)  # fmt: skip


PathsArg = Annotated[list[str], typer.Argument(help="PDF files, directories or glob patterns.")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Gemini model (priced).")]
BudgetOpt = Annotated[str | None, typer.Option("--budget", help="Batch budget in USD.")]
PriorityOpt = Annotated[str | None, typer.Option("--priority", help="0-9 or low|normal|high.")]
LabelOpt = Annotated[str | None, typer.Option("--label", help="A name for the batch.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


class LogLevel(StrEnum):
    """A choice rather than free text, so a typo is a usage error, not a ValueError traceback."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def ledger_engine(*, upgrade: bool = True) -> Engine:
    """The ledger's engine from settings, migrated on first use unless `upgrade=False`.

    Raises SettingsError for a malformed database URL, DatabaseUnavailable when unreachable.
    """
    from pipeline.ledger.db import get_engine
    from pipeline.settings import get_settings

    return get_engine(get_settings(), upgrade=upgrade)
