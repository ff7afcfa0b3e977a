"""What `pipeline costs --chart` draws says on its own what the money was: the emulator's priced
calls are never a bar labelled as Gemini spend, and a period that cost $0 says "no spend" in
words, not an empty 0-0.05 axis. The real CLI over a seeded ledger, on SQLite and PostgreSQL;
an SVG keeps its words as <text>, which is what is read back here."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from html import unescape
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner

pytest.importorskip("matplotlib", reason="the chart extra, pipeline[chart]")

from pipeline.cli import app
from pipeline.ledger import db
from pipeline.ledger.chart import spend_figure
from pipeline.ledger.recorder import SqlRecorder
from pipeline.llm.attempts import Outcome
from pipeline.redis.keys import Keys
from tests.ledger.conftest import attempt, settle

MODEL = "gemini-3.5-flash-lite"


async def _seed(url: str, redis: aioredis.Redis, keys: Keys,
                rows: list[tuple[str, str]]) -> None:  # fmt: skip
    """One settled call per (provider, cost) on 2026-11-01."""
    engine = db.create_ledger_engine(url)
    rec = SqlRecorder(engine, redis, keys)
    try:
        for n, (provider, cost) in enumerate(rows):
            call = attempt(job_id=f"j{n}", started_at=datetime(2026, 11, 1, 12, n, tzinfo=UTC))
            call.provider = provider
            await rec.started(call)
            await rec.settled(settle(call, Outcome.OK, cost, model_version=MODEL))
    finally:
        engine.dispose()


def _words(svg: Path) -> str:
    """Every word the SVG draws, one string."""
    return " ".join(unescape(t) for t in re.findall(r"<text[^>]*>([^<]*)</text>",
                                                     svg.read_text()))  # fmt: skip


def _chart(tmp_path: Path) -> str:
    out = tmp_path / "c2.svg"
    result = CliRunner().invoke(app, ["costs", "--by", "provider", "--chart", str(out)])
    assert result.exit_code == 0, result.output
    return _words(out)


async def test_rehearsal_money_is_never_drawn_as_gemini_spend(
    ledger_url: str, aredis: aioredis.Redis, keys: Keys, tmp_path: Path
) -> None:
    await _seed(ledger_url, aredis, keys, [("emulator", "0.0536"), ("gemini", "0.01")])
    words = _chart(tmp_path)
    assert f"{MODEL} (emulator rehearsal, never billed)" in words, words
    assert f"{MODEL} (Gemini, billed)" in words, words
    # the title says how much of what is drawn nobody billed
    assert "$0.053600000 of $0.063600000 is emulator rehearsal" in words, words
    # no legend entry is the bare model name, which a reader takes for Gemini's bill
    assert not re.search(rf"{re.escape(MODEL)}(?! \()", words), words


async def test_a_period_without_spend_says_so(
    ledger_url: str, aredis: aioredis.Redis, keys: Keys, tmp_path: Path
) -> None:
    await _seed(ledger_url, aredis, keys, [("offline", "0"), ("emulator", "0")])
    words = _chart(tmp_path)
    assert "no spend from 2026-11-01 to 2026-11-01: $0.000000000" in words, words
    assert "0.05" not in words  # no empty axis with ticks


def test_figures_without_spend_have_no_axis_and_paid_ones_start_at_zero() -> None:
    import matplotlib.pyplot as plt

    free = {"2026-03-01": {"offline analyzer ($0)": Decimal(0)}}
    for spend, said in (({}, "no calls in this period"), (free, "no spend")):
        fig = spend_figure(spend)
        try:
            ax = fig.axes[0]
            assert not ax.axison and not ax.patches
            assert any(said in t.get_text() for t in ax.texts)
        finally:
            plt.close(fig)
    paid = spend_figure({"2026-03-01": {f"{MODEL} (Gemini, billed)": Decimal("0.25")}})
    try:
        assert paid.axes[0].get_ylim()[0] == 0 and paid.axes[0].get_ylim()[1] >= 0.25
    finally:
        plt.close(paid)
