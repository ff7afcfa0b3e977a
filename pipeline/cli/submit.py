"""`pipeline submit`: queue PDFs as one batch (or, with --dry-run, price them).

It goes through tasks/submission.py and the ledger exactly as the HTTP API does, so a file
submitted here and there is the same job and is paid for once.
"""

from __future__ import annotations

import asyncio
import glob
import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from pipeline.cli.common import (
    BudgetOpt,
    JsonOpt,
    LabelOpt,
    ModelOpt,
    PathsArg,
    PriorityOpt,
    console,
    err_console,
    ledger_engine,
    make_console,
    print_table,
)
from pipeline.cli.mode import DeadlineOpt, ModeOpt
from pipeline.errors import InputError
from pipeline.ledger.budget import check_budget_usd
from pipeline.money import dollars, format_usd
from pipeline.queue.client import QueueClient
from tasks.estimate import mark_repeats
from tasks.submission import (
    DocOutcome,
    Submission,
    Upload,
    counts_with_provider,
    estimate,
    estimate_counted,
    refusals,
    submit_uploads,
)


def collect_uploads(paths: list[str]) -> tuple[list[Upload], list[DocOutcome]]:
    """Expand globs and directories; a missing or non-PDF path becomes a skip with its reason."""
    uploads: list[Upload] = []
    skipped: list[DocOutcome] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        if path.resolve() in seen:
            return
        seen.add(path.resolve())
        try:
            uploads.append(Upload(str(path), path.read_bytes()))
        except OSError as exc:
            skipped.append(DocOutcome(str(path), "skipped", reason=f"cannot read: {exc.strerror}"))

    for raw in paths:
        matches = sorted(glob.glob(raw, recursive=True)) if glob.has_magic(raw) else [raw]
        if not matches:
            skipped.append(DocOutcome(raw, "skipped", reason="no file matches this pattern"))
        for match in matches:
            path = Path(match)
            if path.is_dir():
                pdfs = sorted(p for p in path.rglob("*") if p.suffix.lower() == ".pdf")
                if not pdfs:
                    skipped.append(
                        DocOutcome(match, "skipped", reason="directory has no .pdf files")
                    )
                for pdf in pdfs:
                    add(pdf)
            elif not path.exists():
                skipped.append(DocOutcome(match, "skipped", reason="no such file"))
            elif path.suffix.lower() != ".pdf":
                skipped.append(DocOutcome(match, "skipped", reason="not a .pdf file"))
            else:
                add(path)
    return uploads, skipped


def parse_budget(value: str | None) -> Decimal | None:
    """--budget as USD (a leading $ allowed), by the one rule every door uses."""
    return None if value is None else check_budget_usd(value.strip().lstrip("$"), "--budget")


def submitted(sub: Submission) -> list[tuple[str, str, str]]:
    """(name, document id, job id) of each document the submission has a job for."""
    return [(d.name, d.document_id, d.job_id) for d in sub.documents
            if d.job_id and d.document_id]  # fmt: skip


def print_submission(sub: Submission) -> None:
    for w in sub.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}", highlight=False, soft_wrap=True)
    made = f"batch {sub.batch_id}" if sub.batch_id else "no batch"
    table = Table(title=f"{made} · {sub.answered_by} · {sub.prompt_version}",
                  title_justify="left")  # fmt: skip
    for col in ("document", "status", "pages", "job / reason"):
        table.add_column(col)
    for d in sub.documents:
        detail = d.job_id or ""
        if d.reason:
            detail = f"{detail} {d.reason}".strip()
        table.add_row(escape(d.name), d.status, str(d.pages or ""), escape(detail))
    print_table(table)
    if not sub.job_ids:  # every file refused: submit_uploads made no batch
        console.print("nothing was queued, so no batch was made", highlight=False)
        return
    console.print(f"mode: {sub.mode} ({sub.mode_why})", highlight=False, soft_wrap=True,
                  markup=False)  # fmt: skip
    console.print(f"batch id: {sub.batch_id}", highlight=False, soft_wrap=True)


def print_estimate(est: dict[str, Any], budget: Decimal | None, billed: bool,
                   batch_mode: bool = False) -> None:  # fmt: skip
    """The dry run's table and totals; `billed` is False for the offline analyzer, which a
    real submit holds to no budget (tasks/submission.refusals); `batch_mode` when the submit
    would run in Batch Mode (its budget is then weighed against the batch figures)."""
    for w in est["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}", highlight=False, soft_wrap=True)
    sources = {d.get("token_source", "estimate") for d in est["documents"] if d["status"] == "ok"}
    how = "countTokens" if sources == {"countTokens"} else "estimated"
    who = est["model"]
    if est.get("provider") == "emulator":  # as the submit's header says it
        who += " on the emulator (priced, never billed)"
    table = Table(title=f"dry run · {who} · tokens {how} · nothing enqueued")
    for col in ("document", "pages", "calls", "input tokens", "worst case USD interactive",
                "worst case USD batch"):  # fmt: skip
        table.add_column(col)
    for d in est["documents"]:
        if d["status"] != "ok":  # skipped, or a duplicate: not paid by this submit
            table.add_row(escape(d["name"]), str(d.get("pages", "-")), "-", "-",
                          escape(f"{d['status']}: {d['reason']}"), "")  # fmt: skip
            continue
        batch = format_usd(d["worst_case_batch_usd"])
        if int(d["calls"]) > 1:
            batch += " (parts batched, merge interactive)"
        table.add_row(escape(d["name"]), str(d["pages"]), str(d["calls"]), str(d["input_tokens"]),
                      format_usd(d['worst_case_usd']), batch)  # fmt: skip
    console.print(table)
    for d in est["documents"]:  # priced, and why: its earlier run ended without a result
        if d["status"] == "ok" and d.get("reason"):
            console.print(f"note: {d['name']}: {d['reason']}", highlight=False, soft_wrap=True,
                          markup=False)  # fmt: skip
    console.print(f"total: {est['total_input_tokens']} input tokens, worst case "
                  f"{dollars(est['total_worst_case_usd'])} interactive, "
                  f"{dollars(est['total_worst_case_batch_usd'])} in Batch Mode (--mode batch)",
                  highlight=False, soft_wrap=True)  # fmt: skip
    total = est["total_worst_case_batch_usd" if batch_mode else "total_worst_case_usd"]
    shown = dollars(total)
    # Said above when the Batch Mode group passes the budget: every document, not "calls".
    grouped = bool(est.get("batch_group_over_budget"))
    if budget is not None and total > budget and billed and not grouped:
        console.print(f"[yellow]warning:[/yellow] the worst-case estimate {shown} is over "
                      f"the budget {dollars(budget)}; calls past the budget "
                      "will be refused",
                      highlight=False, soft_wrap=True)  # fmt: skip
    elif budget is not None and total > budget and not billed:  # Gemini's, not this run's
        console.print(f"note: Gemini's worst case {shown} is over the budget "
                      f"{dollars(budget)}; a run now uses the offline analyzer ($0), which "
                      "the budget does not limit (with Gemini, calls past it would be "
                      "refused)", highlight=False, soft_wrap=True, markup=False)  # fmt: skip


async def _submit(
    uploads: list[Upload], skipped: list[DocOutcome], *, model: str | None, budget: Decimal | None,
    priority: str | None, label: str | None, wait: bool, as_json: bool, queue: str | None = None,
    mode: str | None = None, deadline: str | None = None,
) -> tuple[Submission, bool]:  # fmt: skip
    """The submission, and whether every document completed (True when not waiting)."""
    from pipeline.cli.follow import follow
    from pipeline.queue.follow import unserved_reason

    client = await QueueClient.connect()
    try:
        since = await client.last_event_id()
        sub = await submit_uploads(client, uploads, model=model, budget_usd=budget,
                                   priority=priority, label=label, queue=queue,
                                   mode=mode, deadline=deadline)  # fmt: skip
        sub.documents[:0] = skipped
        unserved = await unserved_reason(client, queue) if queue and sub.job_ids else ""
        if unserved:  # routing to a queue nobody serves is allowed (workers may come later)
            sub.warnings.append(f"queue {queue!r}: {unserved}")
        if as_json:
            print(json.dumps(sub.to_dict()), flush=True)
        else:
            print_submission(sub)
        completed = True
        if wait and sub.job_ids:
            # The submission has migrated the ledger already; a lazy engine cannot fail here,
            # so a database that goes away now only dims the spend figure, not the command.
            engine = ledger_engine(upgrade=False)
            try:
                out = make_console(stderr=True) if as_json else console
                tracker = await follow(client, sub.made, since, out, engine=engine,
                                       documents=submitted(sub))  # fmt: skip
                if tracker.view is not None and not as_json:
                    from pipeline.cli.status import print_batch

                    print_batch(tracker.view)
                view = tracker.view
                completed = view is not None and all(d.status == "complete"
                                                     for d in view.documents)  # fmt: skip
            finally:
                engine.dispose()
        return sub, completed
    finally:
        await client.aclose()


def submit(
    paths: PathsArg,
    model: ModelOpt = None,
    budget: BudgetOpt = None,
    priority: PriorityOpt = None,
    label: LabelOpt = None,
    queue: Annotated[
        str | None,
        typer.Option(
            "--queue",
            help="Queue to route the jobs to (default: the task's own, `default`); "
            "served by `pipeline worker --queue NAME`.",
        ),
    ] = None,
    mode: ModeOpt = None,
    deadline: DeadlineOpt = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the batch until done.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Estimate; enqueue nothing. Exit 1, with the same error, when the "
        "submit would be refused.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Queue PDFs for analysis as one batch; prints the batch id."""
    from pipeline.settings import get_settings

    limit = parse_budget(budget)
    uploads, skipped = collect_uploads(paths)
    if dry_run:
        est = _dry_run_estimate(uploads, model or get_settings().model)
        est["provider"] = _provider()  # who a submit now would have answer
        # whose prices the figures are: Gemini's when the offline analyzer would answer ($0)
        est["priced_as"] = "gemini" if est["provider"] == "offline" else est["provider"]
        est = mark_repeats(asyncio.run(_answered_before(est)))
        est["documents"][:0] = [{"name": s.name, "status": "skipped", "reason": s.reason}
                                for s in skipped]  # fmt: skip
        billed = _billed()
        refused, chosen = would_refuse(model, limit, mode, deadline, billed)
        est["mode"] = chosen
        if chosen == "batch" and limit is not None and billed:
            _warn_batch_group(est, limit)
        est["refusals"] = [{"error": type(e).__name__, "message": str(e)} for e in refused]
        if as_json:
            print(json.dumps(est, default=_json_value))
        else:
            print_estimate(est, limit, billed, batch_mode=chosen == "batch")
            for e in refused:  # as main() prints the real submit's refusal, and its exit code
                err_console.print(f"[red]error:[/red] submit would refuse this: {e}",
                                  highlight=False, soft_wrap=True)  # fmt: skip
        if refused or not any(d["status"] in ("ok", "duplicate") for d in est["documents"]):
            raise typer.Exit(1)  # as the submit: nothing it could queue or answer
        return
    if not uploads:
        report_nothing(skipped, as_json)
    sub, completed = asyncio.run(_submit(uploads, skipped, model=model, budget=limit,
                                         priority=priority, label=label, wait=wait,
                                         as_json=as_json, queue=queue, mode=mode,
                                         deadline=deadline))  # fmt: skip
    if not sub.job_ids or not completed:
        raise typer.Exit(1)  # with --wait: 0 only when every document completed


def _json_value(value: Any) -> str:
    """The estimate's values JSON cannot say: its amounts (Decimal) at nine places, as every
    money field the pipeline prints ("0.000000000" for none, never "0"), the rest as text."""
    return format_usd(value) if isinstance(value, Decimal) else str(value)


def _provider() -> str:
    """Who a submit with these settings would have answer: "offline", "emulator" or "gemini"
    (pipeline.llm.factory.provider_kind)."""
    from pipeline.llm.factory import provider_kind
    from pipeline.settings import get_settings

    return provider_kind(get_settings())


def _billed() -> bool:
    """Whether a submit with these settings would be billed: not by the offline analyzer
    ($0), which is why it is refused no budget and warned of none."""
    return _provider() != "offline"


def would_refuse(model: str | None, budget: Decimal | None, mode: str | None,
                 deadline: str | None, billed: bool) -> tuple[list[InputError], str]:  # fmt: skip
    """Every refusal `submit` with these options would make (tasks/submission.refusals),
    for the provider these settings make (`billed`: see `_billed`), and the mode it would
    run in ("interactive" or "batch")."""
    from datetime import UTC, datetime

    from pipeline.llm.pricing import PriceTable
    from pipeline.settings import get_settings

    _, choice, refused = refusals(get_settings(), PriceTable.load(), model, budget, mode,
                                  deadline, billed, datetime.now(UTC), collect=True)  # fmt: skip
    return refused, choice.mode


def _warn_batch_group(est: dict[str, Any], budget: Decimal) -> None:
    """Add to the dry run's warnings what a Batch Mode submit's warning says when the group's
    worst case passes `budget`: every document would end over budget
    (tasks/budget_warning.group_words), and the budget that admits it; marks the estimate
    `batch_group_over_budget`."""
    from tasks.budget_warning import group_words

    ok = [d for d in est["documents"] if d["status"] == "ok"]
    counted = all(d.get("token_source") == "countTokens" for d in ok)
    said = group_words(ok, budget, Decimal(0), counted) if ok else None
    est["batch_group_over_budget"] = said is not None
    if said is not None:
        words, needed = said
        est["warnings"].append(f"{words}. A submit with `--budget {format_usd(needed)}` (the "
                               "worst case) admits the group.")  # fmt: skip


def _dry_run_estimate(uploads: list[Upload], model: str) -> dict[str, Any]:
    """countTokens through the real provider when a key is set, else the local estimator."""
    from pipeline.llm.factory import make_provider, provider_kind
    from pipeline.settings import get_settings

    settings = get_settings()
    if not uploads or not counts_with_provider(settings):
        est = estimate(uploads, model)
        if provider_kind(settings) == "offline":  # what Gemini would cost, not this run
            why = ("PIPELINE_PROVIDER=offline" if settings.provider == "offline"
                   else "no GEMINI_API_KEY/GOOGLE_API_KEY set")  # fmt: skip
            est["warnings"].append(
                f"{why}: a run now would use the offline analyzer at $0; the figures below "
                "are what Gemini would cost")  # fmt: skip
        return est

    async def counted() -> dict[str, Any]:
        provider = make_provider(settings)
        try:
            return await estimate_counted(uploads, model, provider)
        finally:
            await provider.aclose()

    return asyncio.run(counted())


async def _answered_before(est: dict[str, Any]) -> dict[str, Any]:
    """The estimate with the documents an earlier submission answers marked "duplicate" and
    out of the totals (tasks/estimate.mark_answered), as the submit would find them; a
    warning instead when the queue cannot be read (the embedded Redis not running is no
    reason to start it for a dry run)."""
    from redis.exceptions import RedisError

    from pipeline.errors import RedisUnavailable
    from pipeline.ledger.db import get_engine
    from pipeline.ledger.recorder import SqlRecorder
    from pipeline.settings import get_settings
    from tasks.estimate import mark_answered

    if not any(d["status"] == "ok" for d in est["documents"]):
        return est
    settings = get_settings()
    try:
        client = await QueueClient.connect(read_only=True)
    except RedisUnavailable as exc:
        est["warnings"].append(_unchecked(exc))
        return est
    # Not migrated, so never connected here: a ledger database that is down or not made yet
    # leaves the job states alone to decide (tasks/resubmission._has_result), as in a submit.
    engine = get_engine(settings, upgrade=False)
    try:
        recorder = SqlRecorder(engine, client.redis, client.keys)
        # Offline, the figures are what Gemini would cost (the warning above says so): what
        # a run with a key would find answered, not the offline analyzer's earlier runs.
        return await mark_answered(est, client, recorder, est["priced_as"])
    except RedisError as exc:
        est["warnings"].append(_unchecked(exc))
        return est
    finally:
        await client.aclose()
        await asyncio.to_thread(engine.dispose)


def _unchecked(exc: Exception) -> str:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return (f"not checked against earlier submissions ({first}): a document submitted "
            "before is priced here as new, and a submit may answer it without paying again")


def report_nothing(skipped: list[DocOutcome], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"batch_id": None, "documents": [s.__dict__ for s in skipped]}))
    else:
        for s in skipped:
            console.print(f"skipped {s.name}: {s.reason}", highlight=False, soft_wrap=True)
        console.print("[red]nothing to submit[/red]: no readable PDF among the paths given")
    raise typer.Exit(1)

