"""`pipeline worker` and the dead-letter commands (`pipeline dead list|requeue`)."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.cli import eventloop
from pipeline.cli.common import LogLevel
from pipeline.cli.logs import LogFormat, configure_logging
from pipeline.errors import PipelineError
from pipeline.queue.client import QueueClient

if TYPE_CHECKING:
    from pipeline.services import Services

dead_app = typer.Typer(help="Inspect and requeue dead-lettered jobs.", no_args_is_help=True)


# Modules whose tasks a worker registers unless told otherwise.
DEFAULT_TASK_MODULES = ("tasks.analyze",)


def import_task_modules(names: list[str] | None) -> list[str]:
    """Import the modules that define tasks (default: the product's own), from the current
    directory first, as Celery, RQ and ARQ workers do (a `pipeline` console script, unlike
    `python -m`, does not put it on sys.path). Raises PipelineError naming the module, the
    folders searched and the fix when one given by name cannot be imported."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    loaded = []
    for name in names or DEFAULT_TASK_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if not names:  # the product's tasks are optional for a bare worker
                continue
            searched = "\n  ".join(p or "(current directory)" for p in sys.path)
            what = (
                f"no module named {name!r}"
                if exc.name == name
                else f"it imports {exc.name!r}, which is not installed or not on the path"
            )
            raise PipelineError(
                f"cannot import task module {name!r}: {what}.\nSearched (sys.path):\n  "
                f"{searched}\nFix: run the worker from the folder that holds {name}.py (or "
                f"its package), add that folder to PYTHONPATH, or install the package that "
                f"provides it"
            ) from None
        except Exception as exc:  # the module itself is broken: say which and how
            raise PipelineError(
                f"cannot import task module {name!r}: {type(exc).__name__}: {exc}"
            ) from exc
        loaded.append(name)
    return loaded


def _stacks_on_sigusr1() -> None:
    """SIGUSR1 writes every thread's Python stack to stderr (the standard library's
    faulthandler, outside the event loop, so it answers while a job blocks the loop), and
    the worker goes on: where a job that no longer logs anything is waiting."""
    import faulthandler
    import signal

    if hasattr(signal, "SIGUSR1"):  # not on Windows
        faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)


def worker(
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", "-c", min=1, help="In-flight job slots (default 32)."),
    ] = None,
    queue: Annotated[
        list[str] | None, typer.Option("--queue", "-q", help="Queues to serve, in order.")
    ] = None,
    burst: Annotated[bool, typer.Option("--burst", help="Exit when the queues are empty.")] = False,
    import_: Annotated[
        list[str] | None, typer.Option("--import", "-i", help="Module(s) defining tasks.")
    ] = None,
    log_level: Annotated[
        LogLevel, typer.Option(case_sensitive=False, help="How much the worker logs "
                               "(debug: libraries' own lines too).")
    ] = LogLevel.info,
    log_format: Annotated[
        LogFormat, typer.Option(case_sensitive=False, help="text, or json: one object a line.")
    ] = LogFormat.text,
) -> None:
    """Run a worker: claim jobs when a slot is free, run them under renewed leases.
    `kill -USR1 <pid>` prints every thread's stack to its stderr (a job that seems stuck)."""
    configure_logging(log_level.value, log_format)
    _stacks_on_sigusr1()
    from pipeline.queue.memory import return_large_buffers

    return_large_buffers()  # a worker frees many PDF-sized buffers: give them back
    modules = import_task_modules(import_)
    from pipeline.services import build_worker

    async def main() -> None:
        client = await QueueClient.connect(long_lived=True)
        try:
            w = await build_worker(
                client, queues=queue or ["default"], concurrency=concurrency, burst=burst
            )
            log = logging.getLogger("pipeline.worker")
            log.info("tasks from: %s", ", ".join(modules) or "-")
            started = datetime.now(UTC)
            await w.run()
            services: Services | None = w.deps.get("services")
            if services is not None:
                cut = await services.cut_off(w.signalled_at or started)
                if cut.calls:  # a warning only when money is at stake: priced calls cut
                    log.log(logging.WARNING if cut.priced else logging.INFO, "%s", cut.words())
        finally:
            await client.aclose()

    eventloop.run(main())


@dead_app.command("list")
def dead_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Dead-lettered jobs with their last error."""

    async def main() -> list[dict[str, object]]:
        client = await QueueClient.connect(read_only=True)
        try:
            return [j.to_dict() for j in await client.dead_jobs()]
        finally:
            await client.aclose()

    jobs = asyncio.run(main())
    if as_json:
        print(json.dumps(jobs, default=str))
        return
    from rich.markup import escape  # here: a worker process never loads Rich
    from rich.table import Table

    from pipeline.cli.common import console

    table = Table(title=f"dead-letter ({len(jobs)})")
    for col in ("job", "task", "attempts", "error"):
        table.add_column(col, overflow="fold")  # the whole error, wrapped, never cut
    for j in jobs:
        table.add_row(str(j["id"]), str(j["task"]), str(j["attempt"]), escape(str(j["error"])))
    console.print(table)


@dead_app.command("requeue")
def dead_requeue(job_ids: list[str]) -> None:
    """Put dead jobs back in their queues with fresh attempts."""

    async def main() -> list[tuple[str, bool]]:
        client = await QueueClient.connect()
        try:
            return [(j, await client.requeue(j)) for j in job_ids]
        finally:
            await client.aclose()

    from pipeline.cli.common import console

    for job_id, ok in asyncio.run(main()):
        console.print(f"{job_id}: {'requeued' if ok else 'not dead or failed; left as is'}")

