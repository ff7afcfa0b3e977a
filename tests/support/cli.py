"""`python -m pipeline ...` as a user runs it: a process of its own from the repository, with
the test's PIPELINE_* environment only (the caller's own PIPELINE_* variables are dropped),
forked from a process that has imported the CLI already (tests/support/forkserver.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, forkserver

EXAMPLES = sorted(str(p) for p in (ROOT / "examples" / "docs").glob("*.pdf"))


def cli_env(env: dict[str, str], columns: int = 200) -> dict[str, str]:
    """A `pipeline` command's whole environment: this process's, less its own PIPELINE_*
    settings, then `env`, the checkout on PYTHONPATH, one CPU-pool process and a
    `columns`-wide terminal."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    full.update(env)
    full.update({"PYTHONPATH": str(ROOT), "PIPELINE_CPU_WORKERS": "1", "COLUMNS": str(columns)})
    return full


def run_cli(
    env: dict[str, str],
    *args: str,
    cwd: Path = ROOT,
    columns: int = 200,
    timeout_s: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run `pipeline <args>` with `env` (one CPU worker, a `columns`-wide terminal) and wait
    at most `timeout_s` seconds; the finished process with its stdout and stderr as text.
    A command still running then is killed and comes back with returncode -9 and what it
    printed so far, so the caller's assertion shows it beside the worker's log it adds
    (a TimeoutExpired raised from here carried neither)."""
    full = cli_env(env, columns)
    forked = forkserver.run(list(args), full, cwd, timeout_s, ROOT)
    if forked is not None:
        return forked
    command = [sys.executable, "-m", "pipeline", *args]
    try:
        return subprocess.run(command, cwd=cwd, env=full, capture_output=True, text=True,
                              timeout=timeout_s)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        def said(part: str | bytes | None) -> str:
            return part.decode(errors="replace") if isinstance(part, bytes) else part or ""

        return subprocess.CompletedProcess(
            command, -9, said(exc.stdout),
            said(exc.stderr) + f"\n[killed: still running after {timeout_s:g} s]\n",
        )
