"""The SQL ledger as the book of record: settling what a lost worker, or a lost Redis, left open.

Three kinds of loose end, each closed from what the ledger knows:

- Budget holds of a job whose run is over (pipeline/ledger/lost_holds.py, run by the
  sweeper's and the job-end hooks, and again by the pass below).
- Rows left `started` whose job has no live run any more (the hook never ran: Redis lost
  its data, or the hook failed) become `abandoned` at their worst case. A Batch Mode
  request's row is not a call of its job's run: it waits in the Gemini batch job while its
  document's job (the row's, tasks/batch_mode.py) has not ended, postponed between looks,
  and the collect settles it; held, not spent, until then.
- Budgets and jobs Redis forgot (`Reconciler.run`, on worker start-up and every
  PIPELINE_RECONCILE_INTERVAL_S): each budget's spend is raised to the ledger's sum (never
  lowered: Redis may know of spend the ledger has not been told yet), each call counted as
  Redis has it, so a cost whose hold is still open is left to that hold's close and not
  booked twice (floor.py), and a job the ledger
  has as unfinished but Redis has no record of is marked `lost` with the reason (its PDF
  went with the Redis data), or `complete` when its document's analysis is stored.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import or_, select

from pipeline.ledger.budget import Budget, day_month_scopes, to_nanos
from pipeline.ledger.floor import RECENT_S, LedgerCall, raise_spent
from pipeline.ledger.lost_holds import HoldsSettled, settle_lost_holds
from pipeline.ledger.models import JobRow, LLMCall, Result
from pipeline.ledger.recorder import SqlRecorder, WorstCasePricer
from pipeline.llm.attempts import BATCH_MODE, Outcome
from pipeline.redis.connection import text
from pipeline.redis.keys import Keys
from pipeline.words import counted

log = logging.getLogger(__name__)

NANO = Decimal("0.000000001")
# Ledger job statuses that are final; any other (queued) means "Redis should know this job".
FINAL_JOB_STATUSES = frozenset({"complete", "failed", "dead", "cancelled", "over_budget", "lost"})
LOST_NOTE = (
    "lost: the queue (Redis) has no record of this job and its PDF, e.g. after Redis lost its "
    "data; submit the document again (answers already paid for are reused)"
)
# A `started` row younger than this is left alone: its job may be claiming right now.
STALE_STARTED_S = 10.0
# How far apart the clocks of the worker (row's started_at) and Redis (job's started_ms) may be.
_CLOCK_SLACK_S = 2.0
# A call row with no job is settled once it is this old (no lease to tell it is dead).
_ORPHAN_CALL_S = 3600.0
_BATCH_WINDOW = timedelta(days=3)
# Rows whose cost may still change (a true cost may replace a worst case).
_UNSETTLED = frozenset({Outcome.STARTED.value, Outcome.ABANDONED.value})
_CHUNK = 500


def _money(value: Any) -> Decimal:
    return Decimal(str(value or 0)).quantize(NANO)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass
class ReconcileReport:
    """What one `Reconciler.run` pass changed. `budgets_raised`: budget scopes (a batch's,
    a day's, a month's) whose spend in Redis was below what this key prefix's own calls
    booked in the ledger, raised: Redis had lost spend; `budgets_shared`: scopes raised to
    the ledger's spend by other prefixes' calls (a day's and a month's count every prefix's:
    a rehearsal's beside the real runs) or by settles in flight, nothing lost;
    `budgets_loaded`: scopes Redis had no record of (a new Redis or key prefix), given the
    ledger's spend."""

    abandoned_rows: int = 0
    holds: HoldsSettled = field(default_factory=HoldsSettled)
    budgets_raised: int = 0
    budgets_shared: int = 0
    budgets_loaded: int = 0
    jobs_lost: int = 0
    jobs_completed: int = 0

    def level(self) -> int:
        """WARNING when something was lost or may have been billed without an answer (a
        worker or Redis lost it), INFO for loose ends closed as they ended, DEBUG when the
        pass only filled a new Redis's budgets from the ledger."""
        if self.abandoned_rows or self.holds.abandoned or self.budgets_raised or self.jobs_lost:
            return logging.WARNING
        if self.holds or self.jobs_completed or self.budgets_shared:
            return logging.INFO
        return logging.DEBUG

    def words(self) -> str:
        """What the pass did, in words, only what happened ("" when nothing)."""
        h = self.holds
        said = [
            (self.abandoned_rows, f"{counted(self.abandoned_rows, 'call')} left running by a "
             "worker that is gone booked as abandoned at their worst case (Gemini's possibly "
             "billed; the emulator's and the offline analyzer's never are)"),
            (h.abandoned, f"{counted(h.abandoned, 'budget hold')} of lost jobs kept at their "
             "call's worst case (possibly billed by Gemini; never by the emulator)"),
            (h.booked, f"{counted(h.booked, 'budget hold')} of lost jobs settled at their "
             "call's ledger cost"),
            (h.released, f"{counted(h.released, 'budget hold')} of lost jobs released (the "
             "call never went out)"),
            (self.budgets_raised, f"{counted(self.budgets_raised, 'budget')} (batch, day or "
             "month) raised to the ledger's spend: Redis had less than this key prefix's own "
             "calls there, so it had lost spend"),
            (self.budgets_shared, f"{counted(self.budgets_shared, 'budget')} (batch, day or "
             "month) raised to the ledger's spend, which counts the calls of every key prefix "
             "using this ledger (nothing was lost)"),
            (self.budgets_loaded, f"{counted(self.budgets_loaded, 'budget')} (batch, day or "
             "month) new to this Redis given the ledger's spend"),
            (self.jobs_lost, f"{counted(self.jobs_lost, 'job')} the queue has no record of "
             "marked lost (submit their documents again; paid answers are reused)"),
            (self.jobs_completed, f"{counted(self.jobs_completed, 'job')} the queue has no "
             "record of marked complete (their analysis is stored)"),
        ]  # fmt: skip
        return "; ".join(text for n, text in said if n)


class Reconciler:
    """One pass (`run`) over the ledger that closes what Redis lost or a dead worker left
    open; safe to run from every worker at once (a Redis lock spaces passes `interval_s`
    apart, and every change is idempotent)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        recorder: SqlRecorder,
        budget: Budget,
        prices: WorstCasePricer | None = None,
        *,
        interval_s: float = 60.0,
        lost_after_s: float = 60.0,
    ) -> None:
        self.redis, self.keys = redis, keys
        self.recorder, self.budget, self.prices = recorder, budget, prices
        self.interval_s = interval_s
        self.lost_after_s = lost_after_s

    async def run(self, force: bool = False) -> ReconcileReport | None:
        """One pass, unless another process ran one within `interval_s` (then None)."""
        if not force:
            lock_ms = max(1, int(self.interval_s * 800))
            token = uuid.uuid4().hex
            if not await self.redis.set(self.keys.ledger_reconcile_lock, token, nx=True,
                                        px=lock_ms):  # fmt: skip
                return None
        report = ReconcileReport()
        await self._stale_started(report)
        await self._budgets(report)
        await self._forgotten_jobs(report)
        _log(report)
        return report

    def _mine(self, key_prefix: Any) -> Any:
        """Rows this prefix's Redis can speak for: its own, and those from before rows named
        their prefix (migration 0008). Another prefix's live job is not in these keys, and
        judged by them it looked gone: its calls were booked abandoned mid-call (possibly
        billed, wasted), its jobs marked lost."""
        return or_(key_prefix == self.keys.prefix, key_prefix.is_(None))

    # -- rows left `started` -----------------------------------------------------------------
    async def _stale_started(self, report: ReconcileReport) -> None:
        now = datetime.now(UTC)

        def read() -> list[tuple[str, str | None, datetime, bool]]:
            with self.recorder.sessions() as session:
                return [(r[0], r[1], _utc(r[2]), r[3] == BATCH_MODE) for r in session.execute(
                    select(LLMCall.id, LLMCall.job_id, LLMCall.started_at, LLMCall.mode).where(
                        LLMCall.outcome == Outcome.STARTED.value,
                        LLMCall.started_at < now - timedelta(seconds=STALE_STARTED_S),
                        self._mine(LLMCall.key_prefix),
                    ).limit(_CHUNK)
                ).all()]  # fmt: skip

        rows = await asyncio.to_thread(read)
        by_job: dict[str | None, list[tuple[str, datetime, bool]]] = defaultdict(list)
        for attempt_id, job_id, started, batch in rows:
            by_job[job_id].append((attempt_id, started, batch))
        for job_id, calls in by_job.items():
            if job_id is None:
                old = [i for i, t, _ in calls if (now - t).total_seconds() > _ORPHAN_CALL_S]
                if old:
                    report.abandoned_rows += await self.recorder.mark_abandoned(
                        None, self.prices, ids=old) or 0  # fmt: skip
                continue
            state, started_ms, lease = await self.redis.hmget(
                self.keys.job(job_id), ["state", "started_ms", "token"]
            )
            live_since = None
            if state is not None and text(state) == "active" and started_ms:
                live_since = datetime.fromtimestamp(int(text(started_ms)) / 1000, UTC)
            # A job not ended (queued, postponed, running) still looks at its Gemini batch
            # job: its Batch Mode rows wait there, whenever they were written.
            looking = state is not None and text(state) not in FINAL_JOB_STATUSES
            dead = [i for i, t, batch in calls if not (batch and looking) and (
                live_since is None or t < live_since - timedelta(seconds=_CLOCK_SLACK_S))]
            if not dead:
                continue
            report.abandoned_rows += await self.recorder.mark_abandoned(
                job_id, self.prices, ids=dead) or 0  # fmt: skip
            keep = text(lease) if live_since is not None and lease is not None else None
            settled = await settle_lost_holds(self.budget, self.recorder, job_id, keep_lease=keep)
            report.holds.booked += settled.booked
            report.holds.abandoned += settled.abandoned
            report.holds.released += settled.released

    # -- budgets ------------------------------------------------------------------------------
    async def rebuild_budgets(self) -> int:
        """Raise every current budget's spend (today, yesterday, this month, and batches
        with calls in the last three days) to the ledger's, each call counted once: one
        whose hold is still open is left to its close (floor.py); logs what it did as a pass
        does (a budget Redis had below the ledger's is a WARNING); returns how many rose."""
        report = ReconcileReport()
        await self._budgets(report)
        _log(report)
        return report.budgets_raised + report.budgets_loaded

    async def _budgets(self, report: ReconcileReport) -> None:
        """`rebuild_budgets`, telling a scope Redis had no record of (loaded: a new Redis or
        prefix, nothing lost) from one whose spend it had below the ledger's (raised)."""
        floors, own, calls = await asyncio.to_thread(self._ledger_spend, datetime.now(UTC))
        names = [name for name, usd in floors.items() if usd > 0]
        if not names:
            return
        # Lost: Redis below what this prefix's own calls booked there, leaving out those
        # whose hold is still open (its settle books them): those scopes rise for certain.
        # Any other rise is other prefixes' calls, which the ledger's figure counts too.
        # The holds are read before the spend: a settle landing between the two reads is
        # then in the spend read or left out as held, never missing from both (lost).
        for call in await self._still_held([c for c in calls if c.mine]):
            for name in call.scopes:
                if name in own:
                    own[name] -= call.cost_usd
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.exists(self.budget.keys.budget(name))
                pipe.hget(self.budget.keys.budget(name), "spent")
            replies = await pipe.execute()
        known, spent = replies[::2], [int(text(v)) if v else 0 for v in replies[1::2]]
        absent = sum(not k for k in known)  # each rises: a scope without a record has 0
        lost = sum(1 for name, k, have in zip(names, known, spent, strict=True)
                   if k and have < to_nanos(own.get(name, Decimal(0))))  # fmt: skip
        rose = await raise_spent(self.budget, floors, calls)
        report.budgets_loaded = min(absent, rose)
        report.budgets_raised = min(lost, rose - report.budgets_loaded)
        report.budgets_shared = rose - report.budgets_loaded - report.budgets_raised

    async def _still_held(self, calls: list[LedgerCall]) -> list[LedgerCall]:
        """The calls whose budget hold is still open in Redis (token state `held`)."""
        out: list[LedgerCall] = []
        for start in range(0, len(calls), _CHUNK):
            chunk = calls[start : start + _CHUNK]
            states = await self.redis.mget([self.budget.state_key(c.token) for c in chunk])
            out += [c for c, raw in zip(chunk, states, strict=True)
                    if raw is not None and text(raw) == "held"]  # fmt: skip
        return out

    def _ledger_spend(
        self, now: datetime
    ) -> tuple[dict[str, Decimal], dict[str, Decimal], list[LedgerCall]]:
        """Each scope's spend in the ledger; the part of it this prefix's own calls made
        (`_mine`); and the calls of the last RECENT_S with a cost.

        One SELECT, so one snapshot of the ledger: the floor counts a call either in a
        scope's sum *and* in `calls` (where its open hold counts 0) or in neither. Read
        in two (the day/month rows and calls first, the batches' sums after), a call
        settled in between by another worker was in the batch's sum but not in `calls`:
        the floor booked it while its hold was open, and the hold's settle booked it again
        (the batch's spend ended one call above the ledger and the bill)."""
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        days = [today, today - timedelta(days=1)]
        month = today.replace(day=1)
        since = min(days[-1], month)
        recent = now - timedelta(seconds=RECENT_S)
        batch_since = now - _BATCH_WINDOW
        floors: dict[str, Decimal] = defaultdict(Decimal)
        own: dict[str, Decimal] = defaultdict(Decimal)
        for day in days:
            floors[f"day:{day:%Y-%m-%d}"] = Decimal(0)
        floors[f"month:{month:%Y-%m}"] = Decimal(0)
        # Batches with a call in the window count all their calls, however old.
        current_batches = select(LLMCall.batch_id).where(
            LLMCall.started_at >= batch_since, LLMCall.batch_id.is_not(None)
        )
        current = LLMCall.batch_id.in_(current_batches)
        # A call counts in the day and month its hold does (budget_at, its reservation's
        # moment), not its row's started_at: read just after the reservation, that may be
        # the next day. A row that held nothing has no budget_at; started_at stands in.
        # (budget_at is never after started_at, so `started_at >= since` finds them all.)
        with self.recorder.sessions() as session:
            rows = [(i, _utc(h or t), _money(c), o, b if in_batch else None, mine)
                    for i, h, t, c, o, b, in_batch, mine in session.execute(
                select(LLMCall.id, LLMCall.budget_at, LLMCall.started_at, LLMCall.cost_usd,
                       LLMCall.outcome, LLMCall.batch_id, current,
                       self._mine(LLMCall.key_prefix))
                .where(or_(LLMCall.started_at >= since, current))
            ).all()]  # fmt: skip
        calls: list[LedgerCall] = []
        for attempt_id, at, cost, outcome, batch_id, mine in rows:
            scopes = day_month_scopes(at)
            # batch_id is None here for a batch with no call in the window (not floored).
            batch = (f"batch:{batch_id}",) if batch_id is not None else ()
            # only today's, yesterday's and this month's days: not older rows
            counted = [name for name in (*scopes, *batch)
                       if name in floors or name.startswith("batch:")]  # fmt: skip
            for name in counted:
                floors[name] += cost
                if mine:
                    own[name] += cost
            if at >= recent and cost > 0:
                calls.append(LedgerCall(attempt_id, cost, outcome not in _UNSETTLED,
                                        batch + scopes, mine=bool(mine)))  # fmt: skip
        return {k: v for k, v in floors.items() if v > 0}, dict(own), calls

    # -- jobs Redis forgot --------------------------------------------------------------------
    async def _forgotten_jobs(self, report: ReconcileReport) -> None:
        cutoff = datetime.now(UTC) - timedelta(seconds=self.lost_after_s)

        def read() -> list[tuple[str, str | None, bool]]:
            with self.recorder.sessions() as session:
                jobs = session.execute(
                    select(JobRow.id, JobRow.document_id)
                    .where(JobRow.status.not_in(FINAL_JOB_STATUSES), JobRow.created_at < cutoff,
                           self._mine(JobRow.key_prefix))
                    .limit(5 * _CHUNK)
                ).all()
                docs = {d for _, d in jobs if d}
                analysed = set(session.scalars(
                    select(Result.document_id).where(Result.document_id.in_(docs))
                )) if docs else set()  # fmt: skip
            return [(j, d, d in analysed) for j, d in jobs]

        jobs = await asyncio.to_thread(read)
        for start in range(0, len(jobs), _CHUNK):
            chunk = jobs[start : start + _CHUNK]
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id, _, _ in chunk:
                    # `state`, not the key: a late progress write of a worker still running
                    # the forgotten job recreates the hash with that field alone.
                    pipe.hexists(self.keys.job(job_id), "state")
                known = await pipe.execute()
            now = datetime.now(UTC)
            for (job_id, _, analysed), exists in zip(chunk, known, strict=True):
                if exists:
                    continue
                if analysed:
                    await self.recorder.update_job_status(job_id, "complete", finished_at=now)
                    report.jobs_completed += 1
                else:
                    await self.recorder.update_job_status(
                        job_id, "lost", finished_at=now, last_error=LOST_NOTE
                    )
                    report.jobs_lost += 1


def _log(report: ReconcileReport) -> None:
    said = report.words()
    if said:
        log.log(report.level(), "ledger reconciled with the queue: %s", said)
