"""Which mode a submission's documents run in: `interactive`, `batch` or `auto`, and what a
`--deadline` changes.

A deadline is a duration from now (`6h`, `90m`, `1h30m`, `2d`: pytimeparse, the parser
Python's time-expression users share) or a timestamp with its offset (`2026-12-01T12:00Z`,
`2026-12-01T12:00+01:00`: ISO 8601 as `datetime.fromisoformat` reads it). A timestamp without
an offset is refused: 12:00 in whose time zone cannot be guessed.

The rule (settings `batch_room_s`, 24 h, and `batch_fallback_margin_s`, 2 h):
- `interactive`: always; a deadline changes nothing (the calls start now).
- `auto`: Batch Mode when no deadline is given (nothing is in a hurry) or when the deadline
  is at least `batch_room_s` away (Google's turnaround target, GEMINI.md §3.6); interactive
  otherwise.
- `batch`: Batch Mode, as asked, whatever the deadline: the user chose the price, and a
  batch job often finishes long before Google's 24 h target. The deadline then only brings
  the fallback: a document still waiting in the batch job `batch_fallback_margin_s` before
  its deadline is taken out of it and finished interactively (tasks/batch_fallback.py). A
  deadline already inside that margin would leave Batch Mode before it began, so it is
  refused (DeadlineTooShort) with what to use instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pytimeparse.timeparse import timeparse as parse_duration

from pipeline.errors import BadDeadline, DeadlineTooShort

if TYPE_CHECKING:
    from pipeline.queue.client import QueueClient
    from pipeline.settings import Settings

MODES = ("interactive", "batch", "auto")
_FORMS = "a duration such as 6h, 90m or 1h30m, or a timestamp with its offset such as " \
         "2026-12-01T12:00Z"  # fmt: skip


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:g} h"


def parse_deadline(text: str, now: datetime | None = None) -> datetime:
    """`text` as an aware UTC datetime. Raises BadDeadline for anything else, and for a
    deadline that is not in the future."""
    now = now or datetime.now(UTC)
    raw = text.strip()
    seconds = parse_duration(raw) if raw else None
    if seconds is not None:
        if seconds <= 0:
            raise BadDeadline(f"deadline {text!r} is not in the future; give {_FORMS}")
        return now + timedelta(seconds=float(seconds))
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        raise BadDeadline(f"deadline {text!r} cannot be read; give {_FORMS}") from None
    if at.tzinfo is None:
        raise BadDeadline(f"deadline {text!r} has no time zone; add Z for UTC or an offset "
                          "such as +01:00 (e.g. 2026-12-01T12:00Z)")  # fmt: skip
    at = at.astimezone(UTC)
    if at <= now:
        raise BadDeadline(f"deadline {text!r} ({at.isoformat(timespec='minutes')}) has passed; "
                          f"give {_FORMS}")  # fmt: skip
    return at


@dataclass(frozen=True)
class ModeChoice:
    """What a submission runs in (`mode`: interactive or batch), what was asked (`requested`),
    the deadline (UTC, or None) and why, in words for `status`."""

    mode: str
    requested: str
    deadline: datetime | None
    why: str

    def args(self) -> dict[str, str]:
        """The job arguments that record the choice (tasks/runs.py)."""
        out = {"mode": self.mode, "mode_requested": self.requested, "mode_why": self.why}
        if self.deadline is not None:
            out["deadline"] = self.deadline.isoformat(timespec="seconds")
        return out


def choose_mode(requested: str, deadline: datetime | None, s: Settings,
                now: datetime | None = None, asked: bool = True) -> ModeChoice:  # fmt: skip
    """The module docstring's rule. `asked`: the mode was given with `--mode` (or the API's
    `mode`), not taken from PIPELINE_MODE or its default, which the words then name. Raises
    ValueError for an unknown mode, DeadlineTooShort for `batch` with a deadline inside the
    fallback margin."""
    if requested not in MODES:
        raise ValueError(f"mode must be interactive, batch or auto, not {requested!r}")
    now = now or datetime.now(UTC)
    left = None if deadline is None else (deadline - now).total_seconds()
    when = "" if deadline is None else f" (deadline {deadline.isoformat(timespec='minutes')})"
    how = ("as asked" if asked
           else "PIPELINE_MODE's value (--mode, or the API's mode, chooses another)")
    if requested == "interactive":
        return ModeChoice("interactive", requested, deadline, f"interactive, {how}")
    if requested == "auto":
        if left is None:
            return ModeChoice("batch", requested, None, "auto: Batch Mode, no deadline given")
        if left >= s.batch_room_s:
            return ModeChoice("batch", requested, deadline,
                              f"auto: Batch Mode, the deadline is {_hours(left)} away (at "
                              f"least {_hours(s.batch_room_s)}){when}")  # fmt: skip
        return ModeChoice("interactive", requested, deadline,
                          f"auto: interactive, the deadline is {_hours(left)} away, under the "
                          f"{_hours(s.batch_room_s)} Batch Mode needs{when}")  # fmt: skip
    if left is not None and left <= s.batch_fallback_margin_s:
        raise DeadlineTooShort(
            f"--mode batch with a deadline {_hours(left)} away: documents leave Batch Mode "
            f"{_hours(s.batch_fallback_margin_s)} before their deadline "
            "(PIPELINE_BATCH_FALLBACK_MARGIN_S), so none would be batched; use --mode auto "
            "(interactive for this deadline) or --mode interactive, or a later deadline"
        )
    why = f"batch, {how}" + (f"; finished interactively from "
                               f"{fallback_at(deadline, s).isoformat(timespec='minutes')} if "
                               f"still in the batch job{when}" if deadline else "")  # fmt: skip
    return ModeChoice("batch", requested, deadline, why)


def fallback_at(deadline: datetime, s: Settings) -> datetime:
    """When a document still in a batch job is taken out of it (its deadline minus the
    margin)."""
    return deadline - timedelta(seconds=s.batch_fallback_margin_s)


def due(args: Mapping[str, object], s: Settings, now: datetime | None = None) -> float | None:
    """Seconds until a job's batch fallback (0 when due), or None when it has no deadline."""
    raw = args.get("deadline")
    if not raw:
        return None
    at = fallback_at(datetime.fromisoformat(str(raw)), s)
    return max(0.0, (at - (now or datetime.now(UTC))).total_seconds())


async def annotate_modes(client: QueueClient, rows: list[Any]) -> None:
    """Give each batch-view row (tasks/batches.py DocumentRow) its root job's mode, with
    `left` ("interactive" at its deadline, "cancelled") for a document that left its Gemini
    batch job, else None (the key is always there, as `status --json` documents it), and
    `shown` for people: "batch", "interactive", "batch -> interactive"."""
    from pipeline.llm.batch_group import USE

    for row in rows:
        root = row.run.root if row.run is not None else None
        mode = dict(root.mode, left=None) if root is not None and root.mode else None
        if mode is not None and mode.get("group"):
            left = await client.redis.hget(client.keys.batch_group(mode["group"]),
                                           USE + mode["key"])  # fmt: skip
            left = left.decode() if isinstance(left, bytes) else left
            if left and left != "batch":
                mode["left"] = left
        if mode is not None:
            shown = mode["mode"]
            if mode.get("left"):
                shown += " -> " + ("interactive" if mode["left"] == "interactive" else
                                   mode["left"])  # fmt: skip
            mode["shown"] = shown
        row.mode = mode
