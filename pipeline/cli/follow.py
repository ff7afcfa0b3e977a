"""Following a batch until every document has ended — and saying why when nothing moves.

Each refresh reads the batch's view (tasks/batches.py: every document's state derived from its
jobs, the one source of truth `status` and the API read too), woken early by the queue's event
stream. Beside the documents' own reasons (a budget window, a daily quota or a rate limit until
when, a retry after which error, no live worker for their queue) it shows what holds the whole
batch: a provider that cannot be reached (probed at the start, the whole reason), and the last
call's error while jobs back off and retry.

On a terminal: a Rich Live view with elapsed time, ETA, spend rate and each unfinished
document's stage. Otherwise (a log, CI, a pipe): one line per change of a document's state,
full names and reasons, and a line per change of the counts.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError

from pipeline.cli.status import in_flight_note
from pipeline.errors import PipelineError
from pipeline.money import dollars
from pipeline.queue.client import QueueClient
from tasks.status import ENDED

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from tasks.batches import BatchView

SPEND_UNAVAILABLE = "spend unavailable"
LIVE_ROWS = 15  # unfinished documents shown in the live view; the rest are counted
_NOTE_REFRESH_S = 3.0
_MIN_REFRESH_S = 0.3


@dataclass
class BatchFollow:
    """The batch's latest view, plus what holds it back; `finished` once every document ended."""

    client: QueueClient
    engine: Engine
    batch_id: str
    # (name, document id, root job id) of what was submitted: followed from Redis alone
    # while the ledger is away (nothing counts as complete without its stored result then)
    documents: list[tuple[str, str, str]] = field(default_factory=list)
    view: BatchView | None = None
    notes: list[str] = field(default_factory=list)
    ledger_error: str | None = None
    started: float = field(default_factory=time.monotonic)
    _first_spend: tuple[float, Decimal] | None = None

    @property
    def finished(self) -> bool:
        return self.view is not None and all(d.status in ENDED for d in self.view.documents)

    async def refresh(self) -> None:
        from tasks.batches import batch_view

        try:
            self.view = await batch_view(self.client, self.engine, self.batch_id)
            self.ledger_error = None
        except (SQLAlchemyError, PipelineError) as exc:  # the ledger is away: say so, carry on
            self.ledger_error = f"{SPEND_UNAVAILABLE}: {type(exc).__name__}: " + (
                str(exc).splitlines()[0] if str(exc) else "")  # fmt: skip
            if self.documents:
                self.view = await self._from_redis()
        if self.view is not None and self._first_spend is None:
            self._first_spend = (time.monotonic(), self.view.facts.spend)

    async def _from_redis(self) -> BatchView:
        """The submitted documents' states from their jobs alone (no results, no costs)."""
        from tasks.batch_ledger import LedgerFacts, Member
        from tasks.batches import BatchView, document_rows, read_runs, surroundings

        members = [Member(doc_id, name, None, None, job_id, None, None)
                   for name, doc_id, job_id in self.documents]  # fmt: skip
        facts = LedgerFacts(self.batch_id, None, None, None, "open", Decimal(0), members, {},
                            [], {})  # fmt: skip
        runs = await read_runs(self.client, [m.job_id for m in members if m.job_id], {})
        around = await surroundings(self.client, list(runs.values()))
        return BatchView(facts, document_rows(facts, runs, around))

    def counts(self) -> dict[str, int]:
        docs = self.view.documents if self.view else []
        out = {s: 0 for s in ("complete", "failed", "over_budget", "cancelled", "running",
                              "waiting", "queued")}  # fmt: skip
        for d in docs:
            out[d.status] = out.get(d.status, 0) + 1
        out["total"] = len(docs)
        return out

    def headline(self) -> str:
        c = self.counts()
        ended = c["complete"] + c["failed"] + c["over_budget"] + c["cancelled"]
        elapsed = time.monotonic() - self.started
        parts = [f"batch {self.batch_id}: {c['complete']} done"]
        for name in ("failed", "over_budget", "cancelled", "running", "waiting", "queued"):
            if c[name] or name in ("failed", "running"):
                parts.append(f"{c[name]} {name.replace('_', ' ')}")
        line = ", ".join(parts) + f" of {c['total']} · {_duration(elapsed)} elapsed"
        if 0 < ended < c["total"]:
            line += f" · ETA {_duration(elapsed / ended * (c['total'] - ended))}"
        if self.view is not None and not self.ledger_error:
            f = self.view.facts
            spent = f"spent {dollars(f.spend)}"
            if f.budget_usd is not None:
                spent += f" of {dollars(f.budget_usd)}"
            rate = self._rate()
            if rate is not None:
                spent += f" ({dollars(rate)}/min)"
            line += f" · {spent}{in_flight_note(self.view)}"
        if self.ledger_error:
            line += f" · {self.ledger_error}"
        return line

    def _rate(self) -> Decimal | None:
        if self._first_spend is None or self.view is None:
            return None
        t0, s0 = self._first_spend
        minutes = Decimal(str(max(time.monotonic() - t0, 1e-9) / 60))
        spent = self.view.facts.spend - s0
        return spent / minutes if spent > 0 and minutes > Decimal("0.05") else None


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (
        f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")  # fmt: skip


def _live(tracker: BatchFollow) -> Group:
    rows: list[Any] = [Text(tracker.headline())]
    rows += [Text(note, style="yellow") for note in tracker.notes]
    docs = tracker.view.documents if tracker.view else []
    shown = [d for d in docs if d.status not in ("complete",)]
    if shown:
        table = Table(show_edge=False, pad_edge=False, box=None)
        for col in ("document", "status", "stage / reason"):
            table.add_column(col, overflow="fold")
        for d in shown[:LIVE_ROWS]:
            table.add_row(d.name, d.status, d.reason or "")
        rows.append(table)
        if len(shown) > LIVE_ROWS:
            rows.append(Text(f"… and {len(shown) - LIVE_ROWS} more not complete"))
    return Group(*rows)


async def _notes(tracker: BatchFollow, probe: str | None) -> list[str]:
    from tasks.batches import last_call_error

    notes = [f"provider: {probe}"] if probe else []
    if not tracker.finished:
        try:
            error = await asyncio.to_thread(last_call_error, tracker.engine, tracker.batch_id)
        except Exception:  # the ledger's outage is on the headline already
            error = None
        if error:
            notes.append(f"{error} (its job backs off and retries)")
    return notes


async def follow(
    client: QueueClient,
    batch_id: str,
    since: str,
    console: Console,
    *,
    engine: Engine,
    documents: list[tuple[str, str, str]] | None = None,
    probe: bool = True,
    tick_s: float = 1.0,
) -> BatchFollow:
    """Follow `batch_id` until every document has ended; returns the last picture.
    `documents` ((name, document id, root job id) as submitted) lets it carry on from Redis
    while the ledger is down; `probe` checks first that the provider answers."""
    from pipeline.llm.reach import unreachable

    tracker = BatchFollow(client, engine, batch_id, documents=list(documents or []))
    problem = await unreachable(client.settings) if probe else None
    printed: dict[str, tuple[str, str | None]] = {}
    last: dict[str, Any] = {"head": "", "notes": []}
    notes_at = 0.0

    def plain() -> None:
        for d in tracker.view.documents if tracker.view else []:
            key = (d.status, d.reason)
            if printed.get(d.document_id) != key:
                printed[d.document_id] = key
                reason = f" — {d.reason}" if d.reason else ""
                console.print(f"{d.name}: {d.status}{reason}", highlight=False, soft_wrap=True,
                              markup=False)  # fmt: skip
        for note in tracker.notes:
            if note not in last["notes"]:
                console.print(note, highlight=False, soft_wrap=True, markup=False)
        last["notes"] = list(tracker.notes)
        if tracker.ledger_error and tracker.ledger_error != last.get("ledger"):
            console.print(tracker.ledger_error, highlight=False, soft_wrap=True, markup=False)
        last["ledger"] = tracker.ledger_error
        head = tracker.headline().split(" · ")[0]
        if head != last["head"]:
            console.print(head, highlight=False, soft_wrap=True, markup=False)
            last["head"] = head

    async def step(show: Any) -> None:
        nonlocal notes_at
        await tracker.refresh()
        if time.monotonic() >= notes_at:
            tracker.notes = await _notes(tracker, problem)
            notes_at = time.monotonic() + _NOTE_REFRESH_S
        show()

    async def loop(show: Any) -> None:
        cursor = since
        await step(show)
        while not tracker.finished:
            began = time.monotonic()
            async for event in client.events(since=cursor, until=began + tick_s):
                cursor = event.stream_id
                break  # any change: refresh now (a document's jobs span several batches' events)
            # Many changes at once (hundreds of documents): still one refresh per interval.
            await asyncio.sleep(max(0.0, began + _MIN_REFRESH_S - time.monotonic()))
            await step(show)

    if console.is_terminal:
        with Live(_live(tracker), console=console, refresh_per_second=4) as live:
            await loop(lambda: live.update(_live(tracker)))
    else:
        await loop(plain)
    return tracker
