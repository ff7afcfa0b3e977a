"""What the CLI tests share: an environment with none of the caller's PIPELINE_* settings.

The `pipeline` subprocess runner they use (`run_cli`) is in tests/support/cli.py: the
document and scenario tests run the CLI too.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No PIPELINE_* variable but the test suite's own, and a fresh working directory (so no
    ./pipeline.toml but the one the test writes)."""
    for name in list(os.environ):
        if name.startswith("PIPELINE_") and not name.startswith("PIPELINE_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
