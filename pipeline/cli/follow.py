"""Following a submitted batch until every document is finished, and showing it.

Progress comes from the queue's event stream (one XREAD for the whole batch), not from
polling each job. A long document's own job finishes early, handing over to its chord's
reduce callback; a document counts as done only when that callback is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from pipeline.errors import JobNotFound
from pipeline.ledger.money import DISPLAY_PLACES, format_usd
from pipeline.queue.client import QueueClient
from pipeline.queue.job import TERMINAL, State
from tasks.submission import Submission

if TYPE_CHECKING:
    from sqlalchemy import Engine

_TERMINAL = {s.value for s in TERMINAL}


@dataclass
class DocTrack:
    name: str
    job_id: str  # the job whose end ends the document (the chord callback, once known)
    state: str = "queued"
    error: str | None = None
    chunks: int | None = None


@dataclass
class BatchFollow:
    client: QueueClient
    submission: Submission
    since: str
    docs: dict[str, DocTrack] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        for d in self.submission.documents:
            if d.job_id and d.job_id not in self.docs:
                self.docs[d.job_id] = DocTrack(d.name, d.job_id)

    @property
    def finished(self) -> bool:
        return all(t.state in _TERMINAL for t in self.docs.values())

    def counts(self) -> dict[str, int]:
        done = sum(t.state == "complete" for t in self.docs.values())
        failed = sum(t.state in ("failed", "dead", "cancelled", "over_budget")
                     for t in self.docs.values())  # fmt: skip
        running = sum(t.state == "active" for t in self.docs.values())
        return {"done": done, "failed": failed, "running": running, "total": len(self.docs)}

    async def _refresh(self, track: DocTrack) -> None:
        try:
            job = await self.client.get(track.job_id)
        except JobNotFound:
            track.state, track.error = "failed", "job record expired"
            return
        if (
            job.state == State.COMPLETE
            and isinstance(job.result, dict)
            and "callback_job" in job.result
        ):
            track.job_id = str(job.result["callback_job"])
            track.chunks = int(job.result.get("chunks") or 0)
            await self._refresh(track)
            return
        track.state, track.error = job.state.value, job.error

    async def run(self, on_change: Any, tick_s: float = 1.0) -> None:
        """Follow until every document is finished; `on_change()` after each change/tick."""
        for track in self.docs.values():
            await self._refresh(track)
        on_change()
        cursor = self.since
        own = {d.job_id for d in self.submission.documents if d.status == "queued"}
        only_batch = self.submission.batch_id if own == set(self.docs) else None
        while not self.finished:
            async for event in self.client.events(
                since=cursor, batch=only_batch, until=time.monotonic() + tick_s
            ):
                cursor = event.stream_id
                for track in self.docs.values():
                    if track.job_id == event.job and event.state != "progress":
                        await self._refresh(track)
                if self.finished:
                    break
            on_change()


SPEND_UNAVAILABLE = "spend unavailable"
_SPEND_REFRESH_S = 1.0


def spend_line(engine: Engine | None, batch_id: str, budget: Decimal | None) -> str:
    """Blocking SQL: call it through `spend_text`, never on the event loop."""
    if engine is None:
        return ""
    from tasks.batches import batch_spend

    spent = batch_spend(engine, batch_id)
    shown = f" of ${format_usd(budget, DISPLAY_PLACES)}" if budget is not None else ""
    return f"spent ${format_usd(spent, DISPLAY_PLACES)}{shown}"


async def spend_text(engine: Engine | None, batch_id: str, budget: Decimal | None) -> str:
    """The spend line, read in a thread; a ledger outage shows as "spend unavailable" rather
    than ending the command — the jobs run on regardless, and the ledger catches up later."""
    if engine is None:
        return ""
    try:
        return await asyncio.to_thread(spend_line, engine, batch_id, budget)
    except Exception:  # any database failure: the progress view must survive it
        return SPEND_UNAVAILABLE


async def follow(
    client: QueueClient,
    submission: Submission,
    since: str,
    console: Console,
    *,
    engine: Engine | None = None,
    budget: Decimal | None = None,
) -> BatchFollow:
    """Show done/failed/running of total, spend vs budget and an ETA until the batch is done:
    a Rich Live view on a terminal, one plain line per change otherwise."""
    tracker = BatchFollow(client, submission, since)
    last_plain: list[str] = [""]
    spend: list[str] = [""]

    async def refresh_spend() -> None:
        spend[0] = await spend_text(engine, submission.batch_id, budget)

    async def keep_spend_fresh() -> None:
        # The progress callbacks are synchronous; the spend is read beside them and cached.
        while True:
            await refresh_spend()
            await asyncio.sleep(_SPEND_REFRESH_S)

    def line() -> str:
        c = tracker.counts()
        finished = c["done"] + c["failed"]
        elapsed = time.monotonic() - tracker.started
        eta = ""
        if 0 < finished < c["total"]:
            eta = f" · ETA {elapsed / finished * (c['total'] - finished):.0f}s"
        shown = f" · {spend[0]}" if spend[0] else ""
        return (f"batch {submission.batch_id}: {c['done']} done, {c['failed']} failed, "
                f"{c['running']} running of {c['total']}{shown}{eta}")  # fmt: skip

    def plain() -> None:
        text = line().split(" · ETA")[0]
        if text != last_plain[0]:
            console.print(text, highlight=False, soft_wrap=True)
            last_plain[0] = text

    await refresh_spend()
    refresher = asyncio.create_task(keep_spend_fresh()) if engine is not None else None
    try:
        if console.is_terminal:
            with Live(Text(line()), console=console, refresh_per_second=4,
                      transient=False) as live:  # fmt: skip
                await tracker.run(lambda: live.update(Text(line())))
                await refresh_spend()  # the last calls' cost, in the final line
                live.update(Text(line()))
        else:
            await tracker.run(plain)
            await refresh_spend()
            plain()
    finally:
        if refresher is not None:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
    return tracker
