"""`pipeline status [BATCH]`: where the work is and, above all, why it is waiting.

A batch's view lists every document with the state tasks/status.py derives from its jobs
(the one source of truth the API, dashboard and metrics read too): what runs and at which
stage, what failed and the whole reason, what waits and for what — the shared rate limiter
(paused after a 429, a daily quota spent until midnight Pacific), a budget window, a retry
back-off, or no live worker. Without a batch, the overview shows the limiter and budget
state from Redis, the queues and workers, and the recent batches.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from pipeline.cli.common import JsonOpt, console, ledger_engine, print_table, say_note
from pipeline.errors import Reason
from pipeline.money import dollars, format_usd
from pipeline.queue.client import QueueClient
from pipeline.words import counted

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from tasks.batches import BatchView, DocumentRow

_WAIT_WORDS = {
    Reason.BUDGET_WINDOW: "for the day or month budget window",
    Reason.BUDGET_HOLDS: "for running calls' budget holds to settle",
    Reason.DAILY_QUOTA: "for the provider's daily quota to reset",
    Reason.BUDGET_OVERRUN: "for a person to raise a budget stopped by an overrun",
    Reason.RATE_LIMIT: "for the provider's rate limit (429) to pass",
    "retry": "for a retry after an error",
    "no_worker": "for a live worker to serve their queue",
    "worker_lost": "for a lost worker's lease to run out (then requeued, attempts allowing)",
}
_STYLE = {"failed": "red", "over_budget": "yellow", "cancelled": "dim", "complete": "green"}


async def _models(client: QueueClient) -> list[str]:
    """The default model, those with their own limits, and any with a bucket in Redis."""
    from pipeline.llm.bucket import bucket_models

    s = client.settings
    return sorted({s.model, *s.limits, *await bucket_models(client.redis, client.keys)})


async def service_state(client: QueueClient, engine: Engine) -> dict[str, Any]:
    """Limiter state per model and the day/month budget state, as JSON-ready dicts; a
    window's spend is never below the ledger's (pipeline/ledger/windows.py)."""
    from pipeline.ledger.budget import Budget
    from pipeline.ledger.windows import shown_budgets
    from pipeline.llm.limiter import Limiter

    limiter = Limiter(client.redis, client.keys, client.settings)
    limits = [await limiter.state(m) for m in await _models(client)]
    budget = await shown_budgets(Budget(client.redis, client.keys, client.settings), engine)
    return {"limiter": limits, "budget": {k: v.as_dict() for k, v in budget.items()}}


async def _overview(engine: Engine) -> dict[str, Any]:
    client = await QueueClient.connect(read_only=True)
    try:
        return await service_state(client, engine)
    finally:
        await client.aclose()


async def read_batch(ref: str, engine: Engine) -> BatchView:
    """The batch `ref` names (id, unique id prefix or label), every document's state now."""
    from tasks.batches import batch_view

    client = await QueueClient.connect(read_only=True)
    try:
        return await batch_view(client, engine, ref)
    finally:
        await client.aclose()


async def _queue_status() -> dict[str, object]:
    client = await QueueClient.connect(read_only=True)
    try:
        return {"depths": await client.depths(), "workers": await client.workers()}
    finally:
        await client.aclose()


def print_queue_status(data: dict[str, object]) -> None:
    depths = data["depths"]
    assert isinstance(depths, dict)
    table = Table(title="queues")
    for col in ("queue", "ready", "by priority"):
        table.add_column(col)
    for name, q in depths["queues"].items():
        prio = " ".join(f"p{p}:{n}" for p, n in sorted(q["by_priority"].items(), reverse=True))
        table.add_row(name, str(q["ready"]), prio or "-")
    console.print(table)
    console.print(
        f"delayed {depths['delayed']} · active {depths['active']} · dead-letter {depths['dead']}"
    )
    workers = data["workers"]
    assert isinstance(workers, list)
    wt = Table(title=f"workers ({len(workers)} alive)")
    for col in ("worker", "queues", "slots", "state"):
        wt.add_column(col)
    for w in workers:
        wt.add_row(
            w["id"],
            ",".join(w["queues"]),
            f"{w['slots_used']}/{w['concurrency']}",
            w.get("state", ""),
        )
    console.print(wt)


def reused_note(view: BatchView) -> str:
    """The words after a batch's spend when earlier batches paid for results reused here
    ("" when none did): the cost column sums to the spend, and what was paid elsewhere has
    its own column."""
    from tasks.batches import paid_elsewhere

    elsewhere = paid_elsewhere(view)
    if not elsewhere:
        return ""
    return (f" in this batch ({dollars(elsewhere)} more was paid in earlier batches for "
            "results reused here: the paid elsewhere column)")


def elsewhere_cells(view: BatchView) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """The "paid elsewhere USD" column (its title, and each document's cell by id) when an
    earlier batch paid for a result reused here; no column otherwise."""
    from tasks.batches import paid_elsewhere

    if not paid_elsewhere(view):
        return (), {d.document_id: () for d in view.documents}
    return ("paid elsewhere USD",), {d.document_id: (format_usd(d.paid_elsewhere),)
                                     for d in view.documents}  # fmt: skip


def rehearsal_note(view: BatchView) -> str:
    """Words after a batch's spend when its calls were the emulator's: priced as Gemini
    bills them, never billed ("" otherwise)."""
    f = view.facts
    if any(c.provider == "emulator" for c in f.calls if c.batch_id == f.batch_id):
        return " (emulator calls: priced as Gemini bills them, never billed)"
    return ""


def in_flight_note(view: BatchView) -> str:
    """Words after a batch's spend while calls are in flight: their worst case, held against
    budgets and not spent yet, as `pipeline costs` counts them ("" when none is)."""
    if not view.held:
        return ""
    return f" · {dollars(view.held)} held for calls in flight (not spent yet)"


def print_batch(view: BatchView) -> None:
    """Every document: name, status, stage or reason, pages, cost and wasted, then counts,
    spend against budget and what waits for what. Names and reasons are never cut."""
    f = view.facts
    label = f" · {f.label}" if f.label else ""
    budget = f" of {dollars(f.budget_usd)}" if f.budget_usd is not None else ""
    in_flight = in_flight_note(view)
    console.print(f"batch {f.batch_id}{label} · {counted(len(view.documents), 'document')} · spent "
                  f"{dollars(f.spend)}{budget}{rehearsal_note(view)}{reused_note(view)}"
                  f"{in_flight}",
                  highlight=False,
                  soft_wrap=True, markup=False)  # fmt: skip
    if view.budget_stop is not None:  # nothing of the batch runs until a person acts
        console.print(f"[yellow]{escape(view.budget_stop.words())}[/yellow]", highlight=False,
                      soft_wrap=True)  # fmt: skip
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    # Shown once any document is not plainly interactive (Batch Mode, auto, a deadline).
    modes = any(d.mode and (d.mode["shown"] != "interactive" or d.mode.get("deadline"))
                for d in view.documents)  # fmt: skip
    # Shown once a call is in flight: its worst case, held, not in the cost (`pipeline costs`).
    held = bool(view.held)  # a column once a call is in flight (not in the cost)
    elsewhere, cells = elsewhere_cells(view)
    for col in ("document", "status", *(("mode",) if modes else ()), "pages", "cost USD",
                *(("held USD",) if held else ()), "wasted USD", *elsewhere,
                "stage / reason"):  # fmt: skip
        table.add_column(col, overflow="fold", justify="right" if "USD" in col else "left")
    for d in view.documents:
        mode = ((d.mode or {}).get("shown", "-"),) if modes else ()
        held_cell = (format_usd(d.held),) if held else ()
        table.add_row(escape(d.name), d.status, *mode, str(d.pages or ""), format_usd(d.cost),
                      *held_cell, format_usd(d.wasted), *cells[d.document_id],
                      escape(d.reason or ""),
                      style=_STYLE.get(d.status))  # fmt: skip
    whys = {(d.mode or {}).get("why") for d in view.documents} - {None, ""}
    if modes and whys:
        console.print("mode: " + "; ".join(sorted(str(w) for w in whys)), highlight=False,
                      soft_wrap=True, markup=False)  # fmt: skip
    print_table(table)
    console.print(" · ".join(f"{state} {n}" for state, n in view.by_state.items()) or
                  "no documents", highlight=False)  # fmt: skip
    unread = sum(d.unread is not None for d in view.documents)
    if unread:  # complete, yet not analysed: never to be taken for the others
        console.print(f"[yellow]{counted(unread, 'complete document')} not read, or not all "
                      "of it: no text layer (stage / reason says which)[/yellow]",
                      highlight=False, soft_wrap=True)  # fmt: skip
    waiting = view.waiting()
    kinds = Counter(str(w["kind"]) for w in waiting)
    for kind, n in kinds.items():
        console.print(f"[yellow]{counted(n, 'job')} waiting: "
                      f"{_WAIT_WORDS.get(kind, kind)}[/yellow]",
                      highlight=False, soft_wrap=True)  # fmt: skip
    failed = [d for d in view.documents if d.status in ("failed", "over_budget")]
    # a blocked answer's document: the same request would be refused again, and paid again
    blocked = [d for d in failed if d.status == "failed" and _blocked(d)]
    if blocked:
        console.print(f"{counted(len(blocked), 'document')} failed because the provider "
                      "blocked the request or its answer: the same request would be refused "
                      "again, so retrying pays again for nothing", highlight=False,
                      soft_wrap=True, markup=False)  # fmt: skip
    if len(failed) > len(blocked):
        flags = " ".join(sorted({"--failed" if d.status == "failed" else "--over-budget"
                                 for d in failed if d not in blocked}))  # fmt: skip
        also = (f" (it sends the {counted(len(blocked), 'blocked one')} again too)"
                if blocked and "--failed" in flags else "")  # fmt: skip
        console.print(f"{_lift_first(view)}retry with fresh calls: pipeline retry "
                      f"{f.batch_id[:12]} {flags}{also}", highlight=False, soft_wrap=True,
                      markup=False)  # fmt: skip


def _blocked(doc: DocumentRow) -> bool:
    """Whether the job a failed document's state comes from ended on a blocked answer."""
    jobs = doc.run.jobs() if doc.run is not None else []
    return any(j.id == doc.state.job_id and j.reason == Reason.ANSWER_BLOCKED for j in jobs)


def _lift_first(view: BatchView) -> str:
    """What must come before a retry of the batch: lifting the stop an overrun put on its
    budget (a retry alone meets it again); "" when its budget admits calls."""
    stop = view.budget_stop
    if stop is None:
        return ""
    ref = view.facts.batch_id[:12]
    amount = (f"--set {format_usd(stop.lifts_usd)}" if stop.lifts_usd is not None
              else f"--set <more than {format_usd(stop.stopped_at_usd)}>")  # fmt: skip
    return f"first lift the budget's stop: pipeline budget {ref} {amount}; then "


def _per(period_s: float) -> str:
    return "minute" if period_s == 60 else f"{period_s:g} s"


def _print_services(state: dict[str, Any]) -> None:
    from pipeline.llm.bucket import BURST_NOTE

    per = _per(state["limiter"][0]["period_s"]) if state["limiter"] else "minute"
    table = Table(title="rate limits (shared by all workers)", caption=BURST_NOTE,
                  caption_justify="left")  # fmt: skip
    for col in ("model", f"requests used / limit (last {per})", "requests used / limit (today)",
                "start now: requests · tokens", "in flight", "paused until",
                "daily quota exhausted until"):  # fmt: skip
        table.add_column(col)
    for m in state["limiter"]:
        lim = m["limits"]
        table.add_row(
            m["model"], f"{m['requests_in_window']} / {lim['rpm']}",
            f"{m['requests_today']} / {lim['rpd']}",
            f"{m['requests_left']:.0f} of {m['requests_burst']:.0f} · "
            f"{m['tokens_left']:.0f} of {m['tokens_burst']:.0f}",
            str(m["in_flight"]), m["paused_until"] or "-", m["daily_exhausted_until"] or "-",
        )  # fmt: skip
    console.print(table)
    budget = Table(title="budgets")
    for col in ("window", "spent USD", "reserved USD", "limit USD"):
        budget.add_column(col)
    for window, b in state["budget"].items():
        limit = b["limit_usd"] or "none"
        if b.get("stopped"):
            limit += " (stopped: a bill passed its reservation; raise the limit)"
        budget.add_row(window, b["spent_usd"], b["reserved_usd"], limit)
    console.print(budget)


def status(batch: Annotated[str | None, typer.Argument()] = None, as_json: JsonOpt = False) -> None:
    """Every document of a batch (by id, id prefix or label): status, stage or reason, pages,
    cost; without BATCH: queues, workers, rate limits, budgets and recent batches."""
    from tasks.batches import recent_batches

    engine = ledger_engine()
    try:
        if batch is not None:
            view = asyncio.run(read_batch(batch, engine))
            say_note(view.note)
            if as_json:
                print(json.dumps(view.as_json()))
            else:
                print_batch(view)
            return
        queues = asyncio.run(_queue_status())
        services = asyncio.run(_overview(engine))
        batches = recent_batches(engine)
    finally:
        engine.dispose()
    if as_json:
        print(json.dumps({**queues, **services, "batches": batches}, default=str))
        return
    print_queue_status(queues)
    _print_services(services)
    table = Table(title="recent batches")
    # "held USD": calls in flight (a Batch Mode group waiting in its Gemini batch job), their
    # worst case held against the budget and not in the spend, as `pipeline status BATCH`.
    for col in ("batch", "label", "created", "documents", "spent USD", "held USD",
                "budget USD"):  # fmt: skip
        table.add_column(col)
    for b in batches:
        table.add_row(b["batch_id"], b["label"] or "", (b["created_at"] or "")[:19],
                      str(b["documents"]), b["spend_usd"], b["held_usd"],
                      b["budget_usd"] or "-")  # fmt: skip
    console.print(table)
