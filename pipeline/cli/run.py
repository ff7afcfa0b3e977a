"""`pipeline run` (submit and work in this process) and `pipeline results`.

`run` is the quick start: the same submission and the same worker as a deployment, in one
process. Ctrl-C gives running jobs the grace period; a second one releases them back to Redis
at once, cutting off their calls in flight (Gemini's possibly billed, and paid again by the next
run; the emulator's priced, never billed; the offline analyzer's free, however often sent).
Running it again finds the same jobs (idempotency keys) and reuses paid answers (call store).
The line a stopped run ends with says which of these happened (`stopped_words`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from pipeline.cli import eventloop
from pipeline.cli.common import (
    BudgetOpt,
    JsonOpt,
    LabelOpt,
    ModelOpt,
    PathsArg,
    PriorityOpt,
    console,
    ledger_engine,
    print_table,
    say_note,
)
from pipeline.cli.mode import DeadlineOpt, ModeOpt
from pipeline.cli.submit import (
    collect_uploads,
    parse_budget,
    print_submission,
    report_nothing,
    submitted,
)
from pipeline.money import dollars, format_usd
from pipeline.queue.client import QueueClient
from pipeline.words import counted
from tasks.submission import submit_uploads

if TYPE_CHECKING:
    from pipeline.ledger.cut import CutCalls
    from tasks.batches import BatchView

OutOpt = Annotated[Path | None, typer.Option("--out", help="Directory for one JSON per document.")]


def _safe_name(name: str) -> str:
    stem = Path(name).stem or "document"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:100]


def write_results(results: list[dict[str, Any]], out: Path) -> dict[str, Path]:
    """One `<name>.json` per analysed document (suffixed with the hash when names clash);
    returns document id -> file written."""
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    used: set[str] = set()
    for r in results:
        if r["analysis"] is None:
            continue
        stem = _safe_name(r["name"] or r["document_id"])
        if stem in used:
            stem = f"{stem}-{r['sha256'][:8]}"
        used.add(stem)
        path = out / f"{stem}.json"
        path.write_text(json.dumps(r, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written[r["document_id"]] = path
    return written


async def _run(paths: list[str], model: str | None, budget: Any, priority: str | None,
               label: str | None, out: Path | None, concurrency: int | None,
               mode: str | None = None, deadline: str | None = None) -> int:  # fmt: skip
    from pipeline.cli.follow import follow
    from pipeline.cli.worker import import_task_modules
    from pipeline.services import build_worker, open_services
    from tasks.batches import batch_view
    from tasks.status import ENDED

    uploads, skipped = collect_uploads(paths)
    if not uploads:
        report_nothing(skipped, False)
    import_task_modules(None)
    client = await QueueClient.connect(long_lived=True)
    services = await open_services(client)
    try:
        started = datetime.now(UTC)  # the calls this run cut off at a stop began after this
        since = await client.last_event_id()
        sub = await submit_uploads(client, uploads, model=model, budget_usd=budget,
                                   priority=priority, label=label, services=services,
                                   mode=mode, deadline=deadline)  # fmt: skip
        sub.documents[:0] = skipped
        print_submission(sub)
        if not sub.job_ids:
            return 1
        worker = await build_worker(client, queues=["default"], concurrency=concurrency,
                                    services=services)  # fmt: skip
        worker_task = asyncio.create_task(worker.run())
        await services.recorder.flush()  # the batch's rows, if the database blinked
        await _registered(client, worker.id)  # else the first refresh says "no live worker"
        follow_task = asyncio.create_task(
            follow(client, sub.made, since, console, engine=services.engine,
                   documents=submitted(sub))
        )
        done, _ = await asyncio.wait(
            {worker_task, follow_task}, return_when=asyncio.FIRST_COMPLETED
        )
        if follow_task not in done or worker.signalled:  # Ctrl-C, whichever ended first
            follow_task.cancel()
            await asyncio.gather(follow_task, worker_task, return_exceptions=True)
            crash = None if worker_task.cancelled() else worker_task.exception()
            if crash is not None and not worker.signalled:
                raise crash  # the worker failed: not a stop, and not to be said as one
            # Said from what happened once the worker stopped, not what a stop usually does:
            # a job may have finished in the grace period, a call may have been cut off.
            await services.recorder.flush()
            view = await batch_view(client, services.engine, sub.made)
            cut = await services.cut_off(worker.signalled_at or started)
            if not services.released and all(d.status in ENDED for d in view.documents):
                # every document ended within the grace period: its results are written and
                # summed up as if the run had not been stopped
                await _finish(view, out or client.settings.home / "results" / sub.made)
            console.print(stopped_words(view, len(services.released), cut), highlight=False,
                          soft_wrap=True, markup=False)  # fmt: skip
            return 130
        worker.stop()
        await worker_task
        await services.recorder.flush()
        view = await batch_view(client, services.engine, sub.made)
        await _finish(view, out or client.settings.home / "results" / sub.made)
        return 0 if all(d.status == "complete" for d in view.documents) else 1
    finally:
        await services.aclose()
        await client.aclose()


async def _finish(view: BatchView, where: Path) -> None:
    """Write one JSON per analysed document under `where`, then print the summary table and
    what was found."""
    from tasks.export import results_of

    found = results_of(view)
    written = await asyncio.to_thread(write_results, found, where)
    print_summary(view, written)
    print_findings(found)


def stopped_words(view: BatchView, released: int, cut: CutCalls) -> str:
    """The line a stopped run ends with: the batch's documents done, the running jobs that
    went back to the queue (`released`), the calls cut off in flight (`cut`) and what to do;
    "nothing is paid twice" only when no priced call was cut off (the offline analyzer's
    cost nothing, however often they are sent)."""
    from tasks.status import ENDED

    total = len(view.documents)
    done = sum(d.status == "complete" for d in view.documents)
    left = sum(d.status not in ENDED for d in view.documents)
    ended = total - done - left  # failed, over budget, cancelled: a rerun starts them afresh
    said = [f"all {total} documents done" if done == total else f"{done} of {total} documents done"]
    if ended:
        said.append(f"{ended} ended without a result (`pipeline status {view.facts.batch_id}`)")
    said.append(f"{counted(released, 'running job')} went back to the queue" if released
                else "nothing went back to the queue")  # fmt: skip
    if cut.calls:
        said.append(cut.words())
    if not left and not ended:
        said.append(f"nothing to run again (results: `pipeline results {view.facts.batch_id}`)")
    elif not left:
        said.append(f"results: `pipeline results {view.facts.batch_id}`")
    else:
        said.append("run the same command again to continue"
                    + ("" if cut.priced else " (nothing is paid twice)"))
    return "stopped: " + "; ".join(said)


async def _registered(client: QueueClient, worker_id: str, timeout_s: float = 5.0) -> None:
    """Wait (a few seconds at most) for this process's worker to be in the registry."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if any(w["id"] == worker_id for w in await client.workers()):
            return
        await asyncio.sleep(0.05)


def print_summary(view: BatchView, written: dict[str, Path]) -> None:
    """One row per document: status, pages, cost (paid in this batch; what earlier batches
    paid for a reused result in its own column), result file or reason."""
    from pipeline.cli.status import elsewhere_cells, rehearsal_note, reused_note

    f = view.facts
    table = Table(title=f"batch {f.batch_id}", title_justify="left")
    elsewhere, cells = elsewhere_cells(view)
    for col in ("document", "status", "pages", "cost USD", *elsewhere, "result / reason"):
        table.add_column(col, overflow="fold")
    for d in view.documents:
        status = d.status
        if d.run is not None and d.run.parts:
            status += f" ({counted(len(d.run.parts), 'part')})"
        detail = str(written[d.document_id]) if d.document_id in written else d.reason or ""
        if d.document_id in written and d.paid_in:
            detail += f" (paid in batch {', '.join(b[:12] for b in d.paid_in)})"
        if d.document_id in written and d.unread:  # a file is written, but not of its text
            detail += f" — {d.unread}"
        table.add_row(escape(d.name), status, str(d.pages or ""), format_usd(d.cost),
                      *cells[d.document_id], escape(detail))  # fmt: skip
    print_table(table)
    console.print(f"total spend: {dollars(f.spend)}{rehearsal_note(view)}{reused_note(view)} · "
                  f"results: "
                  f"`pipeline results {f.batch_id}`", highlight=False, soft_wrap=True)  # fmt: skip


def run(
    paths: PathsArg,
    model: ModelOpt = None,
    budget: BudgetOpt = None,
    priority: PriorityOpt = None,
    label: LabelOpt = None,
    out: OutOpt = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", "-c", min=1)] = None,
    mode: ModeOpt = None,
    deadline: DeadlineOpt = None,
) -> None:
    """Submit PDFs and process them in this process until done (the quick start)."""
    code = eventloop.run(_run(paths, model, parse_budget(budget), priority, label, out, concurrency,
                            mode, deadline))  # fmt: skip
    say_redis_left_running()
    if code:
        raise typer.Exit(code)


def say_redis_left_running() -> None:
    """The private redis-server outlives `run` on purpose (pipeline/redis/server.py): say
    so, what it is for and how to stop it, so a quick start leaves no process unexplained.
    Nothing when PIPELINE_REDIS_URL names a Redis, or the private one does not answer."""
    from pipeline.redis.server import EmbeddedRedis
    from pipeline.settings import get_settings

    settings = get_settings()
    if settings.redis_url:
        return
    server = EmbeddedRedis(settings.home)
    if not server.ping():
        return
    where = server.dir
    with contextlib.suppress(ValueError):  # shown from the working directory when under it
        where = where.relative_to(Path.cwd())
    pid = f", pid {server.pid}" if server.pid else ""
    console.print(f"redis-server is still running (under {where}{pid}) for "
                  "`pipeline status` and `pipeline results`; stop it with "
                  "`pipeline redis stop`", highlight=False, soft_wrap=True,
                  markup=False)  # fmt: skip


class ResultsFormat(StrEnum):
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


def results(
    batch: Annotated[str, typer.Argument(help="Batch id, unique id prefix or label.")],
    out: OutOpt = None,
    fmt: Annotated[ResultsFormat | None, typer.Option(
        "--format", help="Export: json, jsonl or csv (summary, key points, entities).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """A batch's analyses: printed, exported (--format), or one JSON file per document (--out)."""
    from pipeline.cli.status import read_batch
    from tasks.export import export, results_of

    engine = ledger_engine()
    try:
        view = asyncio.run(read_batch(batch, engine))
    finally:
        engine.dispose()
    say_note(view.note)
    data = results_of(view)
    if out is not None:
        written = write_results(data, out)
        pending = [r for r in data if r["analysis"] is None]
        if as_json:
            print(json.dumps({"written": [str(p) for p in written.values()],
                              "pending": [r["name"] for r in pending]}))  # fmt: skip
        else:
            for p in written.values():
                console.print(f"wrote {p}", highlight=False, soft_wrap=True)
            for r in pending:
                why = f" — {r['reason']}" if r["reason"] else ""
                console.print(f"no result for {r['name']}: {r['status']}{why}{_asked(r)}",
                              highlight=False, soft_wrap=True, markup=False)  # fmt: skip
        return
    if fmt is not None or as_json:
        sys.stdout.write(export(data, fmt.value if fmt is not None else "json"))
        return
    print_findings(data)


def _asked(r: dict[str, Any]) -> str:
    """Who a document without a result asked, from its run's calls, or that it asked none."""
    if r["provider"]:
        return f" (provider {r['provider']}, {counted(r['calls'], 'call')})"
    return " (no provider was called)"


# How much of each finding a person reads in the terminal; `--json` has the whole record.
SUMMARY_CHARS = 240
TOP_ENTITIES = 3


def print_findings(data: list[dict[str, Any]]) -> None:
    """What was found in each document, a few lines each: type, language and who answered
    (offline, emulator, gemini), the start of the summary, the top entities; or why there is
    no result."""
    console.print("[bold]what was found[/bold]")
    for r in data:
        a = r["analysis"]
        pages = f" ({counted(r['pages'], 'page')})" if r["pages"] else ""
        head = f"[bold]{escape(r['name'])}[/bold]{pages}"
        if not a:
            why = f" — {r['reason']}" if r["reason"] else ""
            console.print(head + escape(f": {r['status']}{why}{_asked(r)}"), soft_wrap=True)
            continue
        language = a.get("language") or "?"
        by = f", by {r['provider']}" if r.get("provider") else ""
        console.print(head + escape(f": {a['document_type']}, language {language}{by}"),
                      soft_wrap=True)  # fmt: skip
        summary = " ".join(str(a.get("summary") or "").split())
        if len(summary) > SUMMARY_CHARS:
            summary = summary[: SUMMARY_CHARS - 1].rsplit(" ", 1)[0] + "…"
        console.print(escape(f"  {summary}"), soft_wrap=True, highlight=False)
        entities = a.get("entities") or {}
        for kind in ("organizations", "people", "dates", "amounts"):
            top = [str(e) for e in (entities.get(kind) or [])][:TOP_ENTITIES]
            if top:
                console.print(escape(f"  {kind}: {'; '.join(top)}"), soft_wrap=True,
                              highlight=False)  # fmt: skip
