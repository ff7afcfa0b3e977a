"""Calls cut off in flight by a stop: what a stopped `pipeline run` or `pipeline worker` says,
and what a resubmission of a document says of its run's calls cut off earlier.

A job released at shutdown goes back to its queue, but a provider call it had in flight is
cancelled, not finished: the ledger books it `abandoned` at its worst case, and the job's next
run sends it again (no answer was stored to reuse). What that costs depends on who was asked,
the ledger row's `provider`: Gemini may bill the call cut off and bills the next one too; the
emulator prices both as Gemini would but bills neither (a rehearsal); the offline analyzer
reaches no provider, so its calls cost nothing however often they are cut and sent again.
So only a stop that cut no priced call can say nothing is paid twice.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.ledger.models import LLMCall
from pipeline.ledger.report import NANO
from pipeline.llm.attempts import Outcome
from pipeline.money import dollars, to_decimal
from pipeline.words import counted

_CHUNK = 500  # ids per IN (...): SQLite's bound-parameter limit is far above this
# The order the kinds are said in; a row without a provider (written before migration 0006
# gave calls one) is taken as Gemini's: the one that may have billed it.
_KINDS = ("gemini", "emulator", "offline")


@dataclass(frozen=True, slots=True)
class CutKind:
    """`calls` abandoned rows of one provider ("gemini", "emulator", "offline") and their
    booked cost (each at its worst case; $0 for the offline analyzer)."""

    provider: str
    calls: int
    booked_usd: Decimal


@dataclass(frozen=True, slots=True)
class CutCalls:
    """Abandoned rows by who answered them, in `_KINDS` order, none of them empty."""

    kinds: tuple[CutKind, ...] = ()

    @property
    def calls(self) -> int:
        return sum(k.calls for k in self.kinds)

    @property
    def booked_usd(self) -> Decimal:
        return sum((k.booked_usd for k in self.kinds), Decimal(0))

    @property
    def priced(self) -> int:
        """The calls a rerun books again at a price (Gemini's, billed; the emulator's, a
        rehearsal's): every one but the offline analyzer's."""
        return sum(k.calls for k in self.kinds if k.provider != "offline")

    @property
    def billed(self) -> int:
        """The calls a provider may have billed, and bills again when they are sent again."""
        return sum(k.calls for k in self.kinds if k.provider == "gemini")

    def words(self) -> str:
        """In words, or "" when no call was cut: e.g. "6 calls in flight were cut off: they
        may have been billed, are booked at their worst case ($0.085000000), and running
        again pays for them again" (Gemini's); each kind says its own part."""
        if not self.calls:
            return ""
        were = "was" if self.calls == 1 else "were"
        return (f"{counted(self.calls, 'call')} in flight {were} cut off: "
                + "; ".join(_kind_words(k, mixed=len(self.kinds) > 1) for k in self.kinds))

    def again_words(self) -> str:
        """What running a job again means for these calls of it, cut off earlier: e.g. "2
        calls of it were cut off in flight: they may have been billed, ... and are paid
        again when it runs" ("" when none)."""
        if not self.calls:
            return ""
        were = "was" if self.calls == 1 else "were"
        return (f"{counted(self.calls, 'call')} of it {were} cut off in flight: "
                + "; ".join(_kind_words(k, mixed=len(self.kinds) > 1, when="when it runs")
                            for k in self.kinds))  # fmt: skip


def _kind_words(kind: CutKind, mixed: bool, when: str = "") -> str:
    """One provider's part: Gemini's may have been billed and are paid for again; the
    emulator's are priced and never billed; the offline analyzer's cost nothing."""
    one = kind.calls == 1
    they, are, their, them = ("it", "is", "its", "it") if one else ("they", "are", "their", "them")
    who = f"{kind.calls} of them" if mixed and not one else ("one" if mixed else they)
    worst = f"{are} booked at {their} worst case ({dollars(kind.booked_usd)})"
    if kind.provider == "offline":
        cost, later = ("costs" if one else "cost"), f" {when}" if when else ""
        return (f"{who} {are} the offline analyzer's (no provider asked), so {they} {cost} "
                f"nothing and nothing is paid again{later}")
    # the emulator's are paid in the rehearsal's dollars: booked again, counted against the
    # budgets again, billed by no one
    rehearsal = " in the rehearsal's dollars" if kind.provider == "emulator" else ""
    again = (f"and {are} paid again{rehearsal} {when}" if when
             else f"and running again pays for {them} again{rehearsal}")  # fmt: skip
    if kind.provider == "emulator":
        return (f"{who} {are} the emulator's, a rehearsal (priced as Gemini bills, never "
                f"billed), {worst}, {again}")
    gemini = " (Gemini's)" if mixed else ""
    return f"{who}{gemini} may have been billed, {worst}, {again}"


def cut_calls(engine: Engine, job_ids: Collection[str], since: datetime) -> CutCalls:
    """The `abandoned` ledger rows of `job_ids` that ended at or after `since` (aware UTC;
    the stop's first signal): the calls those jobs had in flight when this process stopped
    them, not one an earlier attempt of the same job abandoned at its timeout. Reads
    committed rows only: flush the recorder first."""
    start = since.astimezone(UTC)
    rows = _abandoned(lambda: Session(engine), job_ids, start)
    return _by_kind((provider, cost) for provider, cost, _answered in rows)


def unanswered_cuts(sessions: Callable[[], Session], job_ids: Collection[str]) -> CutCalls:
    """The `abandoned` rows of `job_ids` (jobs yet to run, or running) whose call no `ok`
    row of the same jobs answered since: the calls their next run sends again."""
    rows = _abandoned(sessions, job_ids, None)
    return _by_kind((provider, cost) for provider, cost, answered in rows if not answered)


def _abandoned(sessions: Callable[[], Session], job_ids: Collection[str],
               since: datetime | None) -> list[tuple[str, Decimal, bool]]:  # fmt: skip
    """(provider, booked cost, answered since by an `ok` row of the same jobs and call key)
    of each abandoned row of `job_ids`, ended at or after `since` when given."""
    ids = sorted(set(job_ids))
    out: list[tuple[str, Decimal, bool]] = []
    wanted = (Outcome.ABANDONED.value, Outcome.OK.value)
    with sessions() as session:
        for i in range(0, len(ids), _CHUNK):
            query = select(LLMCall.provider, LLMCall.cost_usd, LLMCall.call_key,
                           LLMCall.outcome).where(LLMCall.job_id.in_(ids[i : i + _CHUNK]),
                                                  LLMCall.outcome.in_(wanted))  # fmt: skip
            if since is not None:
                query = query.where(LLMCall.finished_at >= since)
            rows = session.execute(query).all()
            answered = {r.call_key for r in rows if r.outcome == Outcome.OK.value and r.call_key}
            for r in rows:
                if r.outcome != Outcome.ABANDONED.value:
                    continue
                # SQLite keeps NUMERIC as a double: back to nano-dollars before any sum
                out.append((r.provider or "", to_decimal(r.cost_usd).quantize(NANO),
                            r.call_key in answered))  # fmt: skip
    return out


def _by_kind(rows: Iterable[tuple[str, Decimal]]) -> CutCalls:
    """(provider, booked cost) rows summed by kind; a provider outside `_KINDS` (none: a row
    from before migration 0006) counts as Gemini's."""
    calls: dict[str, int] = {}
    booked: dict[str, Decimal] = {}
    for provider, cost in rows:
        kind = provider if provider in _KINDS else "gemini"
        calls[kind] = calls.get(kind, 0) + 1
        booked[kind] = booked.get(kind, Decimal(0)) + cost
    return CutCalls(tuple(CutKind(k, calls[k], booked[k]) for k in _KINDS if k in calls))
