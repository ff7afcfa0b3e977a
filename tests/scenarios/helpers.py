"""What the batch scenarios share: a `pipeline worker` process for the analysis tasks pointed
at the test's emulator and ledger, and reading a batch back through the CLI."""

from __future__ import annotations

import json
from typing import Any

from tests.support.cli import run_cli as cli
from tests.support.workers import WorkerProcess

# Two pages per call (560 tokens a page plus the prompt allowance): a 6-page PDF is 3 parts.
TWO_PAGES_PER_PART = str(2 * 560 + 4096 + 10)
_OWN = ("PIPELINE_REDIS_URL", "PIPELINE_KEY_PREFIX")  # WorkerProcess sets these itself


def analysis_worker(redis_url: str, env: dict[str, str], *args: str) -> WorkerProcess:
    """A worker process for tasks.analyze with the test's settings (emulator, database...)."""
    extra = {k: v for k, v in env.items() if k not in _OWN}
    return WorkerProcess(redis_url, env["PIPELINE_KEY_PREFIX"], *args,
                         imports=("tasks.analyze",), **extra)  # fmt: skip


def status_json(env: dict[str, str], batch: str) -> dict[str, Any]:
    r = cli(env, "status", batch, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def batch_id_of(stdout: str) -> str:
    """The id `submit` / `run` print as `batch id: …`."""
    return stdout.split("batch id: ")[1].split()[0]


def start_pipeline(env: dict[str, str], *args: str, **popen: Any) -> Any:
    """`python -m pipeline ARGS` from the checkout (a subprocess.Popen, text mode, or the
    same forked by tests/support/forkserver.py) with `env` over this process's environment
    less its own PIPELINE_* settings, one CPU-pool process and a wide terminal; `popen` goes
    to Popen (stdout, stderr, start_new_session...)."""
    import subprocess
    import sys

    from tests.support import ROOT, forkserver
    from tests.support.cli import cli_env

    full = cli_env(env)
    forked = forkserver.popen(list(args), full, ROOT, ROOT, **popen)
    if forked is not None:
        return forked
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=ROOT, env=full,
                            text=True, **popen)  # fmt: skip


class CliProcess:
    """`python -m pipeline ARGS` running in the background, its output gathered line by line
    (stdout and stderr together) so a test can wait for a line and then signal it."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        import subprocess
        import threading

        self.proc = start_pipeline(env, *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, predicate: Any, timeout_s: float, what: str) -> str:
        """The first output line for which `predicate(line)` holds, within the deadline."""
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if predicate(line):
                    return line
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no line {what} within {timeout_s}s:\n{self.output}")

    def finish(self, timeout_s: float = 120) -> int:
        code = self.proc.wait(timeout_s)
        self._reader.join(10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
