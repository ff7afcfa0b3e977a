"""`pipeline cancel|budget|retry`: steering a batch that is running or has ended.

Each is a thin door onto tasks/control.py (retry: tasks/retry.py), which the HTTP API uses
too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from pipeline.cli.common import JsonOpt, console, ledger_engine, say_note
from pipeline.errors import BatchNotFound, JobNotFound
from pipeline.money import dollars
from pipeline.queue.client import QueueClient
from pipeline.words import counted

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from pipeline.ledger.recorder import SqlRecorder

T = TypeVar("T")
WaitOpt = Annotated[bool, typer.Option("--wait", help="Follow the batch until done.")]


def _with_services(work: Callable[[QueueClient, SqlRecorder, Engine], Awaitable[T]]) -> T:
    from pipeline.ledger.recorder import SqlRecorder

    async def main() -> T:
        engine = ledger_engine()
        client = await QueueClient.connect()
        try:
            recorder = SqlRecorder(engine, client.redis, client.keys)
            return await work(client, recorder, engine)
        finally:
            await client.aclose()
            await asyncio.to_thread(engine.dispose)

    return asyncio.run(main())


def cancel(
    target: Annotated[str, typer.Argument(help="A batch (id, id prefix or label) or a job id.")],
    as_json: JsonOpt = False,
) -> None:
    """Cancel a batch or one job: queued work ends at once, running work within about a second
    (a call in flight is booked as abandoned, at its worst case)."""
    from pipeline.settings import get_settings
    from tasks.control import cancel_batch, cancel_job

    async def work(client: QueueClient, recorder: SqlRecorder, engine: Engine) -> Any:
        try:
            return await cancel_job(client, recorder, target)
        except JobNotFound:
            pass
        try:
            return await cancel_batch(client, recorder, engine, target)
        except BatchNotFound:
            raise BatchNotFound(
                f"no batch and no job {target!r} (a batch by id, id prefix or label; a job by "
                "its full id); `pipeline status` lists recent batches"
            ) from None

    done = _with_services(work)
    say_note(done.note)
    if as_json:
        print(json.dumps(done.as_json(get_settings().min_lease_s)))
        return
    console.print(f"{done.target}: {cancel_words(done)}", highlight=False, soft_wrap=True)
    for remote in done.batch_jobs:
        console.print(f"Gemini batch job {remote} cancelled (what it answered before is booked "
                      "when it ends)", highlight=False, soft_wrap=True, markup=False)  # fmt: skip
    for name in done.skipped:
        console.print(f"left alone: {name} (answered by another batch's run; cancel that one)",
                      highlight=False, soft_wrap=True, markup=False)  # fmt: skip


def cancel_words(done: Any) -> str:
    """What a cancel did, as `pipeline status` will show it (tasks/control.Cancelled)."""
    from pipeline.settings import get_settings

    return str(done.message(get_settings().min_lease_s))


def budget(
    batch: Annotated[str, typer.Argument(help="Batch id, id prefix or label.")],
    set_usd: Annotated[str, typer.Option("--set", help="The batch's new budget in USD.")],
    as_json: JsonOpt = False,
) -> None:
    """Change a batch's budget; every call from now on (queued work too) is bounded by it."""
    from tasks.control import set_budget

    amount = set_usd.strip().lstrip("$")
    out = _with_services(lambda c, r, e: set_budget(c, r, e, batch, amount))
    say_note(out["note"])
    if as_json:
        print(json.dumps(out))
        return
    console.print(f"batch {out['batch_id']}: budget {dollars(out['budget_usd'])} (spent "
                  f"{dollars(out['spend_usd'])})", highlight=False, soft_wrap=True)  # fmt: skip
    if out["overrun_stop"] == "lifted":
        console.print("the stop after an overrun is lifted", highlight=False)
    elif out["overrun_stop"]:
        console.print(f"still stopped: an overrun stopped it at {dollars(out['stopped_at_usd'])}; "
                      "give a higher budget", highlight=False, soft_wrap=True)  # fmt: skip
    if out["over_budget"] and out["overrun_stop"] != "still stopped":
        console.print(f"{counted(out['over_budget'], 'document')} ended over budget: "
                      f"`pipeline retry {out['batch_id'][:12]} --over-budget` runs them under "
                      "the new budget",
                      highlight=False, soft_wrap=True)  # fmt: skip
    if out["short"]:
        console.print(_still_short(out), highlight=False, soft_wrap=True)


def _still_short(out: dict[str, Any]) -> str:
    """The over-budget documents the budget just set still cannot admit, and what would."""
    short = out["short"]
    named = ", ".join(f"{escape(d['name'])} (a call of up to {dollars(d['call_usd'])})"
                      for d in short[:3]) + (f" and {len(short) - 3} more" if len(short) > 3
                                              else "")  # fmt: skip
    which = "it" if len(short) == 1 else "any one of them"
    return (f"still too low for {counted(len(short), 'over-budget document')}: {named}, beside "
            f"{dollars(out['used_usd'])} spent or held by calls in flight; "
            f"`pipeline budget {out['batch_id'][:12]} --set {out['admits_usd']}` admits {which}")


def retry(
    batch: Annotated[str, typer.Argument(help="Batch id, id prefix or label.")],
    failed: Annotated[bool, typer.Option("--failed", help="Failed (and dead) documents.")] = False,
    over_budget: Annotated[
        bool, typer.Option("--over-budget", help="Documents that ended over budget.")
    ] = False,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Run failed / over-budget documents again with fresh calls, under the batch's current
    budget (without a flag: every document that ended without a result, cancelled too)."""
    from tasks.retry import retry_batch, retry_states

    states = retry_states(failed, over_budget)

    async def work(client: QueueClient, recorder: SqlRecorder, engine: Engine) -> Any:
        since = await client.last_event_id()
        view, retried = await retry_batch(client, recorder, engine, batch, states)
        say_note(view.note)
        if as_json:
            print(json.dumps({"batch_id": view.facts.batch_id,
                              "documents": [r.__dict__ for r in retried]}), flush=True)  # fmt: skip
        else:
            _print_retried(view.facts.batch_id, retried, states)
            if view.budget_stop is not None and any(r.status == "queued" for r in retried):
                # they run into the same stop: said now, not only when they end over budget
                console.print(f"[yellow]{escape(view.budget_stop.words())}; until then these "
                              "runs end over_budget again[/yellow]", highlight=False,
                              soft_wrap=True)  # fmt: skip
        if wait and any(r.status == "queued" for r in retried):
            from pipeline.cli.common import make_console
            from pipeline.cli.follow import follow
            from pipeline.cli.status import print_batch

            out = make_console(stderr=True) if as_json else console
            tracker = await follow(client, view.facts.batch_id, since, out, engine=engine)
            if tracker.view is not None and not as_json:
                print_batch(tracker.view)
        return retried

    retried = _with_services(work)
    if not retried:
        raise typer.Exit(1)


def _print_retried(batch_id: str, retried: list[Any], states: set[str]) -> None:
    if not retried:
        console.print(f"batch {batch_id}: no document is {' or '.join(sorted(states))}; "
                      "nothing to retry", highlight=False, soft_wrap=True)  # fmt: skip
        return
    table = Table(title=f"retry · batch {batch_id}", title_justify="left")
    for col in ("document", "status", "mode", "job", "was"):
        table.add_column(col, overflow="fold")
    for r in retried:
        table.add_row(escape(r.name), r.status, r.mode or "", r.job_id or "",
                      escape(r.reason or ""))  # fmt: skip
    console.print(table)
    # A document that leaves Batch Mode costs twice as much: said, never only shown.
    for note in sorted({r.mode_note for r in retried if r.mode_note}):
        names = ", ".join(escape(r.name) for r in retried if r.mode_note == note)
        console.print(f"[yellow]warning:[/yellow] {names}: {escape(note)}", highlight=False,
                      soft_wrap=True)  # fmt: skip
