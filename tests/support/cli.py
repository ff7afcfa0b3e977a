"""`python -m pipeline ...` as a user runs it: a real subprocess from the repository, with the
test's PIPELINE_* environment only (the caller's own PIPELINE_* variables are dropped)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

EXAMPLES = sorted(str(p) for p in (ROOT / "examples" / "docs").glob("*.pdf"))


def run_cli(
    env: dict[str, str],
    *args: str,
    cwd: Path = ROOT,
    columns: int = 200,
    timeout_s: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run `pipeline <args>` with `env` (one CPU worker, a `columns`-wide terminal) and wait
    at most `timeout_s` seconds; the finished process with its stdout and stderr as text."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    full.update(env)
    full.update({"PYTHONPATH": str(ROOT), "PIPELINE_CPU_WORKERS": "1", "COLUMNS": str(columns)})
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip
