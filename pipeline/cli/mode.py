"""`--mode interactive|batch` for `pipeline submit` and `pipeline run` (Gemini Batch Mode,
tasks/batch_mode.py); its default is the PIPELINE_MODE setting."""

from __future__ import annotations

from typing import Annotated

import typer

MODES = ("interactive", "batch")


def _check(value: str | None) -> str | None:
    if value is not None and value not in MODES:
        raise typer.BadParameter(f"choose interactive or batch, not {value!r}")
    return value


ModeOpt = Annotated[
    str | None,
    typer.Option(
        "--mode",
        callback=_check,
        help="interactive: one call per document now; batch: one Gemini batch job for the "
        "submission at half the price, results within Google's 24 h target "
        "(default: PIPELINE_MODE, else interactive).",
    ),
]
