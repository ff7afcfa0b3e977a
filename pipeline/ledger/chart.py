"""Spend per day by model as a stacked bar chart (PNG or SVG), via the optional `chart` extra."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.errors import InputError, MissingExtra

SUFFIXES = (".png", ".svg")


def write_spend_chart(spend: dict[str, dict[str, Decimal]], path: Path) -> Path:
    """Draw {day: {model: cost}} to `path`; the suffix picks the format."""
    if path.suffix.lower() not in SUFFIXES:
        raise InputError(f"chart file {path} must end in .png or .svg")
    fig = spend_figure(spend)  # MissingExtra first, before pyplot is imported here
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=path.suffix.lower().lstrip("."))
    plt.close(fig)
    return path


def spend_figure(spend: dict[str, dict[str, Decimal]]) -> Any:
    """The matplotlib Figure of {day: {model: cost}}: stacked bars, the axis from $0 up.
    Raises MissingExtra without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtra(
            "charts need matplotlib: pip install 'pipeline[chart]'"
        ) from None
    days = list(spend)
    models = sorted({m for per_day in spend.values() for m in per_day})
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(days) + 2), 4))
    bottoms = [0.0] * len(days)
    for model in models:
        heights = [float(spend[d].get(model, Decimal(0))) for d in days]
        ax.bar(days, heights, bottom=bottoms, label=model)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    ax.set_ylabel("USD")
    ax.set_ylim(bottom=0)  # spend is never negative: a $0 period must not show a -0.05 axis
    ax.set_title("LLM spend per day by model (UTC)")
    if models:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no calls in this period", ha="center", transform=ax.transAxes)
    ax.tick_params(axis="x", labelrotation=45)
    fig.tight_layout()
    return fig
