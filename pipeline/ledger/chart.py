"""Spend per day by model and provider as a stacked bar chart (PNG or SVG), via the optional
`chart` extra.

The image is what gets shared, so it must say on its own what the table says beside it: each
series names who answered (report.series_label), the emulator's bars are hatched and the title
says how much of the drawn spend was a rehearsal (priced as Gemini bills, never billed), and
a period without spend says so in words instead of drawing an empty axis.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.errors import InputError, MissingExtra
from pipeline.ledger.report import is_rehearsal
from pipeline.money import dollars

SUFFIXES = (".png", ".svg")

# What a user runs to get the chart's dependency (pyproject.toml's optional "chart" extra).
CHART_EXTRA = "pip install 'pipeline[chart]'"


def _plain(words: str) -> str:
    """`words` as matplotlib draws them literally: two "$" would start mathtext."""
    return words.replace("$", r"\$")


def write_spend_chart(spend: dict[str, dict[str, Decimal]], path: Path) -> Path:
    """Draw {day: {series: cost}} (report.daily_spend_by_model) to `path`; the suffix picks
    the format. An SVG keeps its words as text, so they can be searched and read aloud."""
    if path.suffix.lower() not in SUFFIXES:
        raise InputError(f"chart file {path} must end in .png or .svg")
    fig = spend_figure(spend)  # MissingExtra first, before pyplot is imported here
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    with plt.rc_context({"svg.fonttype": "none"}):
        # "tight": the legend sits beside the axes, outside the figure's own box
        fig.savefig(path, format=path.suffix.lower().lstrip("."), bbox_inches="tight")
    plt.close(fig)
    return path


def spend_figure(spend: dict[str, dict[str, Decimal]]) -> Any:
    """The matplotlib Figure of {day: {series: cost}}: stacked bars, the axis from $0 up, the
    emulator's series hatched and counted in the title; no bars and the words "no spend" when
    nothing was spent. Raises MissingExtra without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtra(f"charts need matplotlib: {CHART_EXTRA}") from None
    days = list(spend)
    series = sorted({s for per_day in spend.values() for s in per_day})
    total = sum((c for per_day in spend.values() for c in per_day.values()), Decimal(0))
    rehearsal = sum((c for per_day in spend.values() for s, c in per_day.items()
                     if is_rehearsal(s)), Decimal(0))  # fmt: skip
    fig, ax = plt.subplots(figsize=(max(10.0, 0.6 * len(days) + 7), 4.5))  # + the legend
    title = "LLM spend per day by model and provider (UTC)"
    if total == 0:
        ax.set_title(_plain(title))
        ax.set_axis_off()  # an empty 0-0.05 axis reads as a chart of spend; words do not
        span = f" from {days[0]} to {days[-1]}" if days else ""
        words = f"no spend{span}: {dollars(0)}\n(every call cost $0)" if series else (
            "no calls in this period")
        ax.text(0.5, 0.5, _plain(words), ha="center", va="center", fontsize="large",
                transform=ax.transAxes)  # fmt: skip
        fig.tight_layout()
        return fig
    bottoms = [0.0] * len(days)
    for name in series:
        heights = [float(spend[d].get(name, Decimal(0))) for d in days]
        ax.bar(days, heights, bottom=bottoms, label=_plain(name),
               hatch="//" if is_rehearsal(name) else None)  # fmt: skip
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    ax.set_ylabel("USD")
    ax.set_ylim(bottom=0)  # spend is never negative: never a -0.05 axis
    if rehearsal:
        title += (f"\n{dollars(rehearsal)} of {dollars(total)} is emulator rehearsal\n"
                  "(priced as Gemini bills, never billed)")  # fmt: skip
    ax.set_title(_plain(title), fontsize="medium")
    # beside the axes, so no entry hides a bar
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.tick_params(axis="x", labelrotation=45)
    fig.tight_layout()
    return fig
