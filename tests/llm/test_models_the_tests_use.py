"""The models the tests run against (each test module's `MODEL`, and the settings' default)
stay live for a while yet, by config/pricing.toml's shutdown dates.

On a model's shutdown date the emulator answers it as its successor (as Google does), whose
token counts differ (560 a PDF page instead of 258): on 2026-12-01 two tests that named
`gemini-2.5-flash` failed that way with no change to the code. This check says so a month
ahead, naming the file and the date, instead."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline.llm.pricing import PriceTable
from pipeline.settings import Settings

TESTS = Path(__file__).resolve().parent.parent
HEADS_UP = timedelta(days=30)
_MODEL = re.compile(r'^MODEL = "([^"]+)"', re.MULTILINE)


def test_no_model_the_tests_run_against_shuts_down_within_a_month() -> None:
    used = {"the settings' default model": str(Settings.model_fields["model"].default)}
    for path in sorted(TESTS.rglob("*.py")):
        for name in _MODEL.findall(path.read_text(encoding="utf-8")):
            used[str(path.relative_to(TESTS.parent))] = name
    assert len(used) > 10, used  # the pattern still finds the modules' constants
    prices = PriceTable.load()
    horizon = (datetime.now(UTC) + HEADS_UP).date()
    soon = {where: (name, prices.info(name).shutdown) for where, name in used.items()
            if (prices.info(name).shutdown or horizon + HEADS_UP) <= horizon}  # fmt: skip
    assert not soon, (
        "models that shut down within 30 days (config/pricing.toml), after which the emulator "
        f"answers them as their successor: {soon}; switch these to a model without a near "
        "shutdown date"
    )
