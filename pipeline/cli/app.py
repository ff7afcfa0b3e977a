"""The `pipeline` command: the command table, and `main()`, which runs it.

Every command is a plain function in the module of its group, listed in `COMMANDS` and
`GROUPS` below: this table is the whole CLI. Errors a user can meet are `PipelineError`s;
`main()` prints their message (no traceback) and exits 1.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer

from pipeline.cli import common
from pipeline.errors import PipelineError

# name -> "module:function" in pipeline/cli/; the function's docstring is its --help. Modules
# are imported when their command runs: a worker does not load the API, the ledger's SQL or
# the submit path just to start (and `pipeline --help` imports them all).
COMMANDS: tuple[tuple[str, str], ...] = (
    ("submit", "submit:submit"),
    ("run", "run:run"),
    ("status", "status:status"),
    ("results", "run:results"),
    ("worker", "worker:worker"),
    ("costs", "costs:costs"),
    ("serve", "serve:serve"),
    ("emulator", "emulator:emulator"),
    ("cancel", "control:cancel"),
    ("budget", "control:budget"),
    ("retry", "control:retry"),
)
# name -> a group of subcommands (a typer.Typer)
GROUPS: tuple[tuple[str, str], ...] = (
    ("dead", "worker:dead_app"),
    ("db", "costs:db_app"),
    ("redis", "embedded_redis:redis_app"),
)


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(f"pipeline.cli.{module}"), name)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"pipeline {version('pipeline')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            typer.echo("pipeline (not installed: version unknown)")
        raise typer.Exit()


def _root(
    show_version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Cost-aware batch pipeline for slow, paid LLM calls."""


def build_app(only: str | None = None) -> typer.Typer:
    """The Typer application for the table above; with `only` (a command or group name in
    it), that one alone, so only its module is imported."""
    known = {name for name, _ in (*COMMANDS, *GROUPS)}
    only = only if only in known else None
    app = typer.Typer(
        name="pipeline",
        help="Cost-aware batch pipeline for slow, paid LLM calls.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    app.callback()(_root)  # --version; and one command alone stays a subcommand
    for name, path in COMMANDS:
        if only in (None, name):
            app.command(name)(_load(path))
    for name, path in GROUPS:
        if only in (None, name):
            app.add_typer(_load(path), name=name)
    return app


def __getattr__(name: str) -> Any:
    """`app`, the whole command table, built on first use (tests, `pipeline.cli.app`)."""
    if name == "app":
        globals()["app"] = built = build_app()
        return built
    raise AttributeError(name)


def _flags_as_flags(command: Any) -> Any:
    """Typer's help prints `<bool>` beside an on/off flag as if it took a value; a flag takes
    none, so its value column stays empty (the command, its subcommands, and --help)."""
    for param in command.params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    help_option = command.get_help_option

    def get_help_option(ctx: Any, _inner: Any = help_option) -> Any:
        option = _inner(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = get_help_option
    for sub in getattr(command, "commands", {}).values():
        _flags_as_flags(sub)
    return command


def command(only: str | None = None) -> Any:
    """The click command `main()` runs: the Typer app (`only` as in build_app), its flags
    shown as flags."""
    return _flags_as_flags(typer.main.get_command(build_app(only)))


def _redacted(url: str) -> str:
    """A URL fit to print: any password replaced by ***."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _first(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """`exc` or the first exception of those kinds inside it (a TaskGroup wraps its errors)."""
    if isinstance(exc, kinds):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first(inner, kinds)
            if found is not None:
                return found
    return None


def service_error(exc: BaseException) -> PipelineError | None:
    """A Redis or SQL failure that escaped a command, as the one-line error a user can act on.

    Commands talk to Redis and the ledger in many places; rather than wrap each call, the
    outermost frame turns these into RedisUnavailable / DatabaseUnavailable.
    """
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from sqlalchemy.exc import SQLAlchemyError

    from pipeline.errors import DatabaseUnavailable, RedisUnavailable

    found = _first(exc, (RedisError, SQLAlchemyError))
    if found is None:
        return None
    detail = str(found).splitlines()[0] if str(found) else found.__class__.__name__
    if isinstance(found, RedisError):
        url = _configured("redis_url") or "the embedded Redis"
        if isinstance(found, RedisConnectionError | RedisTimeoutError):
            return RedisUnavailable(
                f"cannot reach Redis at {url}: {detail}; start it or fix PIPELINE_REDIS_URL"
            )
        return RedisUnavailable(
            f"Redis at {url} refused the request: {detail}; check PIPELINE_REDIS_URL "
            "(password, database number) and the server's configuration"
        )
    url = _configured("database_url") or "the SQLite ledger under PIPELINE_HOME"
    return DatabaseUnavailable(
        f"cannot use the ledger database {url}: {detail}; start it or fix "
        "PIPELINE_DATABASE_URL"
    )


def _configured(name: str) -> str | None:
    try:
        from pipeline.settings import get_settings

        value = getattr(get_settings(), name)
    except Exception:  # a broken setting was reported already; the message can do without
        return None
    return _redacted(value) if value else None


def main() -> None:
    """The console script: run the command line, print user errors as one line."""
    try:
        # Without standalone mode click returns (not raises) the code of `typer.Exit(n)`.
        # only the named command's module: `pipeline worker` starts without the others
        only = sys.argv[1] if len(sys.argv) > 1 else None
        code = command(only)(standalone_mode=False, prog_name="pipeline")
        if isinstance(code, int) and code:
            sys.exit(code)
    except PipelineError as exc:
        common.err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        common.err_console.print("interrupted")
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
        mapped = service_error(exc)
        if mapped is None:
            raise
        common.err_console.print(f"[red]error:[/red] {mapped}", highlight=False, soft_wrap=True)
        sys.exit(1)
