"""The `pipeline` command. Each command group lives in its own module and registers on `app`.

Errors a user can meet are `PipelineError`s; `main()` prints their message (no traceback)
and exits 1.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from pipeline.errors import PipelineError

app = typer.Typer(
    name="pipeline",
    help="Cost-aware batch pipeline for slow, paid LLM calls.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)

# Modules that add commands to `app`; a missing one (not written yet) is skipped.
_COMMAND_MODULES = (
    "pipeline.cli.queue_cmds",
    "pipeline.cli.emulator_cmd",
    "pipeline.cli.ledger_cmds",
    "pipeline.cli.docs_cmds",
    "pipeline.cli.serve_cmd",
    "pipeline.cli.redis_cmd",
)


def _load_commands() -> None:
    for name in _COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


def main() -> None:
    _load_commands()
    try:
        # Without standalone mode click returns (not raises) the code of `typer.Exit(n)`.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except PipelineError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # click's own usage errors
        import click

        # typer >= 0.20 raises from its vendored copy of click, not from `click`.
        exits: tuple[type[BaseException], ...] = (click.exceptions.Exit, typer.Exit)
        usage: tuple[type[BaseException], ...] = (click.ClickException,)
        aborts: tuple[type[BaseException], ...] = (click.exceptions.Abort, typer.Abort)
        try:
            from typer._click import exceptions as vendored
        except ImportError:
            pass
        else:
            usage += (vendored.ClickException,)
        if isinstance(exc, exits):
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        if isinstance(exc, usage):
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        if isinstance(exc, aborts):
            sys.exit(130)
        raise
