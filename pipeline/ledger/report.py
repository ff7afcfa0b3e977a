"""`cost_report`: what was spent, on what, and how much of it was wasted.

Sums and percentiles are computed in Python over the selected rows rather than in SQL:
percentiles are not portable between SQLite and PostgreSQL, and SQLite keeps NUMERIC as
floating point, so each row is rounded back to nano-dollars before Decimal sums.
The dict returned here is exactly what `GET /costs` serves and `--format json` prints.

A call belongs to the day (and the --since/--until range) its budget hold counted it in, its
reservation's moment (`budget_at`; pipeline/ledger/windows.py and the budget count it so),
else the moment it started: a call reserved just before midnight UTC is in the same day in
`pipeline costs --by day`, in the budget windows shown, and in the day budget itself.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.errors import InputError
from pipeline.ledger.models import Document, LLMCall, counted_at
from pipeline.llm.attempts import UNUSED, Outcome
from pipeline.money import format_usd

GroupBy = Literal["day", "model", "batch", "document", "status", "mode", "provider"]
GROUPS: tuple[str, ...] = ("day", "model", "batch", "document", "status", "mode", "provider")
# Calls a rehearsal made: priced as Gemini would bill them, never billed by anyone.
REHEARSAL = "emulator"
# Calls the offline analyzer answered: local extraction, no model asked, $0.
OFFLINE = "offline"
NANO = Decimal("0.000000001")
# Spend that bought nothing: unknown-outcome errors and abandoned calls (booked at their
# bound), and paid answers that were not used (truncated, blocked, invalid).
WASTED = frozenset(
    {Outcome.ERROR.value, Outcome.ABANDONED.value, *(o.value for o in UNUSED)}
)
TOKEN_FIELDS = ("input_tokens", "output_tokens", "thinking_tokens", "cached_tokens")
FIELDS = (
    "calls", *TOKEN_FIELDS, "cost_usd", "wasted_usd", "documents", "pages",
    "cost_per_document_usd", "cost_per_page_usd", "latency_p50_s", "latency_p95_s",
    "rehearsal_usd",  # last: a CSV read by column position before it was added still reads
)  # fmt: skip


def parse_when(value: str, *, end: bool = False) -> datetime:
    """YYYY-MM-DD or an ISO datetime, as aware UTC. A bare date used as an end bound means
    the end of that day, so `--until 2026-11-21` includes the 21st."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = datetime.combine(day, time(0), tzinfo=UTC)
            return start + timedelta(days=1) if end else start
        parsed = datetime.fromisoformat(text)
    except OverflowError:  # the day after 9999-12-31 does not exist
        raise InputError(
            f"{value!r} is too late for an end date (the last one is 9999-12-30); "
            "give an earlier date, or leave the bound out"
        ) from None
    except ValueError:
        raise InputError(
            f"{value!r} is not a date: use YYYY-MM-DD (e.g. 2026-11-21) or an ISO datetime "
            "(e.g. 2026-11-21T13:00:00Z)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _money(value: Decimal | float | None) -> Decimal:
    return Decimal(str(value or 0)).quantize(NANO)


def spent_usd(outcome: str, cost_usd: Decimal | float | None) -> Decimal:
    """What a call's row has spent: its cost once settled, an abandoned call's included (it
    may have been billed: booked at its worst case); 0 while it is in flight (`started`),
    whatever worst case its row carries: that is held (`held_usd`), not spent. Exact USD at
    the ledger's precision. Every view of money adds calls up with these two, so a call is
    never both spent and held."""
    if outcome == Outcome.STARTED.value:
        return Decimal(0)
    return _money(cost_usd)


def held_usd(outcome: str, cost_usd: Decimal | float | None,
             estimated_cost_usd: Decimal | float | None) -> Decimal:  # fmt: skip
    """What a call's row holds against budgets while it is in flight (outcome `started`):
    the worst case on its row (a Batch Mode request's, or a crash's floor), else the bound
    reserved before it was sent; 0 for a settled call. Exact USD at the ledger's precision."""
    if outcome != Outcome.STARTED.value:
        return Decimal(0)
    return _money(cost_usd or estimated_cost_usd)


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default), None for no data."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class _Group:
    calls: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_FIELDS, 0))
    cost: Decimal = Decimal(0)
    wasted: Decimal = Decimal(0)
    rehearsal: Decimal = Decimal(0)  # the emulator's part of `cost`: priced, never billed
    pages: dict[str, int] = field(default_factory=dict)  # document id -> pages
    latencies: list[float] = field(default_factory=list)
    in_flight: int = 0  # calls still `started`: sent or about to be, not settled
    in_flight_cost: Decimal = Decimal(0)  # their worst case, held, not yet spent

    def add(self, row: Any) -> None:
        call: LLMCall = row[0]
        if call.outcome == Outcome.STARTED.value:
            # Not spend yet: its row carries the worst case held for it (a Batch Mode
            # request's, or a crash's floor) until it settles or is found abandoned.
            self.in_flight += 1
            self.in_flight_cost += held_usd(call.outcome, call.cost_usd, call.estimated_cost_usd)
            return
        self.calls += 1
        for name in TOKEN_FIELDS:
            self.tokens[name] += int(getattr(call, name) or 0)
        cost = _money(call.cost_usd)
        self.cost += cost
        if call.outcome in WASTED:
            self.wasted += cost
        if call.provider == REHEARSAL:
            self.rehearsal += cost
        if call.document_id:
            self.pages[call.document_id] = int(row[1] or 0)
        if call.latency_s is not None:
            self.latencies.append(float(call.latency_s))

    def as_dict(self) -> dict[str, Any]:
        docs, pages = len(self.pages), sum(self.pages.values())
        p50, p95 = percentile(self.latencies, 0.5), percentile(self.latencies, 0.95)
        return {
            "calls": self.calls,
            **self.tokens,
            "cost_usd": format_usd(self.cost),
            "wasted_usd": format_usd(self.wasted),
            "rehearsal_usd": format_usd(self.rehearsal),
            "documents": docs,
            "pages": pages,
            "cost_per_document_usd": format_usd(self.cost / docs) if docs else None,
            "cost_per_page_usd": format_usd(self.cost / pages) if pages else None,
            "latency_p50_s": None if p50 is None else round(p50, 3),
            "latency_p95_s": None if p95 is None else round(p95, 3),
            "in_flight_calls": self.in_flight,
            "in_flight_usd": format_usd(self.in_flight_cost),
        }


def _key(call: LLMCall, by: str) -> str:
    if by == "day":
        return _utc(call.budget_at or call.started_at).date().isoformat()
    if by == "model":
        return call.model_version or call.model
    if by == "batch":
        return call.batch_id or "(none)"
    if by == "document":
        return call.document_id or "(none)"
    if by == "mode":
        return call.mode or "interactive"
    if by == "provider":
        return call.provider or "(unrecorded)"
    return call.outcome


def _rows(session: Session, since: datetime | None, until: datetime | None) -> Iterable[Any]:
    stmt = select(LLMCall, Document.pages).outerjoin(Document, Document.id == LLMCall.document_id)
    at = counted_at()  # module docstring
    if since is not None:
        stmt = stmt.where(at >= _utc(since))
    if until is not None:
        stmt = stmt.where(at < _utc(until))
    return session.execute(stmt.order_by(at)).all()


def cost_report(
    session: Session,
    since: datetime | None = None,
    until: datetime | None = None,
    by: str = "day",
) -> dict[str, Any]:
    """`{"total": {...}, "rows": [{"key": ..., ...}], "rehearsal_usd", "offline_calls",
    "offline_usd"}` for calls counted in [since, until) (module docstring); `rehearsal_usd`
    is the part of the total the emulator's calls make up (priced as Gemini bills, never
    billed: `--by provider` shows them apart; each row's own `rehearsal_usd` is its part);
    `offline_calls` how many of the settled calls the offline analyzer answered (no model
    asked; their tokens are its own estimate of the text's size) and `offline_usd` what the
    ledger books for them ($0). Calls not settled
    yet (outcome `started`) are not in `cost_usd`: `in_flight_calls` and `in_flight_usd`
    (their worst case, held against budgets) say what may still come.

    Money fields are fixed-point decimal strings; wasted_usd is the cost of attempts that
    bought nothing: errors, abandoned calls, and paid answers that were not used (truncated
    at max_output_tokens, blocked, invalid).
    Attempts whose outcome is unknown carry their reserved worst case (possibly billed,
    never seen back): abandoned rows (cancelled in flight, or the worker died) and error
    rows that timed out, lost their connection once it was made, or got an answer the
    client could not read; other errors (refusals, 5xx answers, a request never sent) are
    $0.
    """
    if by not in GROUPS:
        raise InputError(f"cannot group costs by {by!r}: use one of {', '.join(GROUPS)}")
    total, offline = _Group(), _Group()
    groups: dict[str, _Group] = defaultdict(_Group)
    for row in _rows(session, since, until):
        total.add(row)
        groups[_key(row[0], by)].add(row)
        if row[0].provider == OFFLINE:
            offline.add(row)
    return {
        "by": by,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "total": total.as_dict(),
        # what of the total the emulator's calls make up: a rehearsal's, never billed
        "rehearsal_usd": format_usd(total.rehearsal),
        # how many of the total's calls were the offline analyzer's: no LLM was asked
        "offline_calls": offline.calls,
        "offline_usd": format_usd(offline.cost),  # $0 unless a row says otherwise
        "rows": [{"key": key, **groups[key].as_dict()} for key in sorted(groups)],
    }


# What a chart's series says about who was paid, by the provider a ledger row names: a bar
# is never read as Gemini spend unless Gemini answered (and billed) it.
PAID_BY = {
    "gemini": "Gemini, billed",
    REHEARSAL: "emulator rehearsal, never billed",
    "": "provider unrecorded",
}


def series_label(model: str, provider: str | None) -> str:
    """A chart series' name: the model and who answered, e.g. "gemini-3.5-flash-lite
    (emulator rehearsal, never billed)"; the offline analyzer's is named once."""
    if provider == OFFLINE:
        return "offline analyzer ($0)"
    return f"{model} ({PAID_BY.get(provider or '', provider)})"


def is_rehearsal(label: str) -> bool:
    """Whether a `series_label` names the emulator's calls (priced, never billed)."""
    return label.endswith(f"({PAID_BY[REHEARSAL]})")


def daily_spend_by_model(
    session: Session, since: datetime | None = None, until: datetime | None = None
) -> dict[str, dict[str, Decimal]]:
    """{day: {series: cost}} for the charts, a series per model and provider
    (`series_label`): the emulator's priced calls never share a bar with Gemini's bills."""
    out: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for row in _rows(session, since, until):
        call: LLMCall = row[0]
        if call.outcome == Outcome.STARTED.value:
            continue  # not spend yet (cost_report counts it as in flight)
        label = series_label(_key(call, "model"), call.provider)
        out[_key(call, "day")][label] += _money(call.cost_usd)
    return {day: dict(series) for day, series in sorted(out.items())}
