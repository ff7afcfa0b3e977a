"""`pipeline run` (submit and work in this process) and `pipeline results`.

`run` is the quick start: the same submission and the same worker as a deployment, in one
process. Interrupting it is safe: the worker releases running jobs back to Redis, and
running it again finds the same jobs (idempotency keys) and reuses paid answers (call store).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from pipeline.cli.common import (
    BudgetOpt,
    JsonOpt,
    LabelOpt,
    ModelOpt,
    PathsArg,
    PriorityOpt,
    console,
    ledger_engine,
)
from pipeline.cli.mode import ModeOpt
from pipeline.cli.submit import (
    collect_uploads,
    parse_budget,
    print_submission,
    report_nothing,
)
from pipeline.ledger.money import DISPLAY_PLACES, format_usd
from pipeline.queue.client import QueueClient
from tasks.submission import submit_uploads

OutOpt = Annotated[Path | None, typer.Option("--out", help="Directory for one JSON per document.")]


def _safe_name(name: str) -> str:
    stem = Path(name).stem or "document"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:100]


def write_results(results: list[dict[str, Any]], out: Path) -> list[Path]:
    """One `<name>.json` per analysed document (suffixed with the hash when names clash)."""
    out.mkdir(parents=True, exist_ok=True)
    written, used = [], set()
    for r in results:
        if r["analysis"] is None:
            continue
        stem = _safe_name(r["name"] or r["document_id"])
        if stem in used:
            stem = f"{stem}-{r['sha256'][:8]}"
        used.add(stem)
        path = out / f"{stem}.json"
        path.write_text(json.dumps(r, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written


async def _run(paths: list[str], model: str | None, budget: Any, priority: str | None,
               label: str | None, out: Path | None, concurrency: int | None,
               mode: str | None = None) -> int:  # fmt: skip
    from pipeline.cli.follow import follow
    from pipeline.cli.worker import import_task_modules
    from pipeline.services import build_worker, open_services

    uploads, skipped = collect_uploads(paths)
    if not uploads:
        report_nothing(skipped, False)
    import_task_modules(None)
    client = await QueueClient.connect(long_lived=True)
    services = await open_services(client)
    try:
        since = await client.last_event_id()
        sub = await submit_uploads(client, uploads, model=model, budget_usd=budget,
                                   priority=priority, label=label, services=services,
                                   mode=mode)  # fmt: skip
        sub.documents[:0] = skipped
        print_submission(sub)
        if not sub.job_ids:
            return 1
        worker = await build_worker(client, queues=["default"], concurrency=concurrency,
                                    services=services)  # fmt: skip
        worker_task = asyncio.create_task(worker.run())
        follow_task = asyncio.create_task(
            follow(client, sub, since, console, engine=services.engine, budget=budget)
        )
        done, _ = await asyncio.wait(
            {worker_task, follow_task}, return_when=asyncio.FIRST_COMPLETED
        )
        if follow_task not in done:  # the worker stopped first: Ctrl-C
            follow_task.cancel()
            await asyncio.gather(follow_task, return_exceptions=True)
            console.print("stopped: running jobs went back to the queue; run the same command "
                          "again to continue (nothing is paid twice)")  # fmt: skip
            return 130
        worker.stop()
        await worker_task
        tracker = follow_task.result()
        await services.recorder.flush()
        from tasks.batches import batch_results, document_spend

        results = await asyncio.to_thread(batch_results, services.engine, sub.batch_id)
        costs = await asyncio.to_thread(document_spend, services.engine, sub.batch_id)
        where = out or client.settings.home / "results" / sub.batch_id
        written = await asyncio.to_thread(write_results, results, where)
        _summary(sub, tracker, results, costs, written)
        return 0 if all(t.state == "complete" for t in tracker.docs.values()) else 1
    finally:
        await services.aclose()
        await client.aclose()


def _summary(sub: Any, tracker: Any, results: list[dict[str, Any]], costs: dict[str, Any],
             written: list[Path]) -> None:  # fmt: skip
    by_doc = {r["document_id"]: r for r in results}
    files = {p.stem: p for p in written}
    table = Table(title=f"batch {sub.batch_id}")
    for col in ("document", "status", "pages", "cost USD", "result"):
        table.add_column(col)
    seen = set()
    for d in sub.documents:
        if d.job_id is None:
            table.add_row(d.name, "skipped", "-", "-", d.reason or "")
            continue
        if d.job_id in seen:
            continue
        seen.add(d.job_id)
        track = tracker.docs[d.job_id]
        r = by_doc.get(d.document_id or "")
        path = next(
            (
                str(p)
                for p in files.values()
                if r and p.stem.startswith(_safe_name(r["name"] or ""))
            ),
            "",
        )
        status = track.state + (f" ({track.chunks} parts)" if track.chunks else "")
        if track.error and track.state != "complete":
            path = track.error[:80]
        cost = format_usd(costs.get(d.document_id, 0), DISPLAY_PLACES)
        table.add_row(d.name, status, str(d.pages or ""), cost, path)
    console.print(table)
    total = format_usd(sum(costs.values()), DISPLAY_PLACES)
    console.print(f"total spend: ${total} · results: `pipeline results "
                  f"{sub.batch_id}`", highlight=False, soft_wrap=True)  # fmt: skip


def run(
    paths: PathsArg,
    model: ModelOpt = None,
    budget: BudgetOpt = None,
    priority: PriorityOpt = None,
    label: LabelOpt = None,
    out: OutOpt = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", "-c", min=1)] = None,
    mode: ModeOpt = None,
) -> None:
    """Submit PDFs and process them in this process until done (the quick start)."""
    code = asyncio.run(_run(paths, model, parse_budget(budget), priority, label, out, concurrency,
                            mode))  # fmt: skip
    if code:
        raise typer.Exit(code)


def results(batch: str, out: OutOpt = None, as_json: JsonOpt = False) -> None:
    """A batch's analyses: printed, or one JSON file per document in --out."""
    from tasks.batches import batch_results
    engine = ledger_engine()
    try:
        data = batch_results(engine, batch)
    finally:
        engine.dispose()
    if out is not None:
        written = write_results(data, out)
        pending = [r["name"] for r in data if r["analysis"] is None]
        if as_json:
            print(json.dumps({"written": [str(p) for p in written], "pending": pending}))
        else:
            for p in written:
                console.print(f"wrote {p}", highlight=False, soft_wrap=True)
            for name in pending:
                console.print(f"no result yet for {name}", highlight=False, soft_wrap=True)
        return
    if as_json:
        print(json.dumps(data, default=str))
        return
    for r in data:
        a = r["analysis"]
        head = f"[bold]{r['name']}[/bold] ({r['pages']} pages)"
        console.print(
            head + (f": {a['document_type']} — {a['summary']}" if a else ": no result yet")
        )

