"""What the batch scenarios share: a `pipeline worker` process for the analysis tasks pointed
at the test's emulator and ledger, and reading a batch back through the CLI."""

from __future__ import annotations

import json
from typing import Any

from tests.queue_helpers import WorkerProcess
from tests.test_docs_cli import cli

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
