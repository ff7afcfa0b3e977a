"""A period that cost $0 draws an axis from $0 up, never a negative one (matplotlib centres an
all-zero axis on 0 unless told otherwise)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="the chart extra, pipeline[chart]")

from pipeline.ledger.chart import spend_figure, write_spend_chart


def test_zero_spend_has_no_negative_axis(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    zero = {"2026-03-01": {"offline": Decimal(0)}, "2026-03-02": {"offline": Decimal(0)}}
    fig = spend_figure(zero)
    try:
        bottom, top = fig.axes[0].get_ylim()
        assert bottom == 0 and top > 0
    finally:
        plt.close(fig)
    paid = spend_figure({"2026-03-01": {"gemini": Decimal("0.25")}})
    try:
        assert paid.axes[0].get_ylim()[0] == 0 and paid.axes[0].get_ylim()[1] >= 0.25
    finally:
        plt.close(paid)
    assert write_spend_chart(zero, tmp_path / "c.svg").stat().st_size > 1000
