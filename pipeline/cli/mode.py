"""`--mode interactive|batch|auto` and `--deadline` for `pipeline submit` and `pipeline run`
(Gemini Batch Mode, tasks/batch_mode.py; the rule between them is tasks/modes.py's); the
mode's default is the PIPELINE_MODE setting."""

from __future__ import annotations

from typing import Annotated

import typer

from tasks.modes import MODES


def _check(value: str | None) -> str | None:
    if value is not None and value not in MODES:
        raise typer.BadParameter(f"choose interactive, batch or auto, not {value!r}")
    return value


def _check_deadline(value: str | None) -> str | None:
    """Read here so a bad value is a usage error (exit 2) before anything is inspected; the
    submission reads it again, so a duration counts from the enqueue, not from the prompt."""
    from pipeline.errors import BadDeadline
    from tasks.modes import parse_deadline

    if value is not None:
        try:
            parse_deadline(value)
        except BadDeadline as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


ModeOpt = Annotated[
    str | None,
    typer.Option(
        "--mode",
        callback=_check,
        help="interactive: one call per document now; batch: one Gemini batch job for the "
        "submission at half the price, results within Google's 24 h target; auto: batch when "
        "--deadline is at least PIPELINE_BATCH_ROOM_S (24 h) away or not given, else "
        "interactive (default: PIPELINE_MODE, else interactive).",
    ),
]

DeadlineOpt = Annotated[
    str | None,
    typer.Option(
        "--deadline",
        callback=_check_deadline,
        help="When the results are needed: a duration (6h, 90m, 1h30m) or a timestamp with "
        "its offset (2026-12-01T12:00Z). A document still in a Gemini batch job "
        "PIPELINE_BATCH_FALLBACK_MARGIN_S (2 h) before it is finished interactively.",
    ),
]
