"""What a started `pipeline worker` has imported (issue 16: start-up time and idle memory).

Every module a worker loads costs each worker process its import time at every start and its
memory for as long as it runs. A worker whose tasks do not use the services (LLM, ledger,
document store) loads none of them, nor the API, nor the help-only parts of the CLI: the job
below reports the worker's own `sys.modules` while it runs, so whatever a later change pulls
into the start-up path shows up here by name.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from redis.asyncio import Redis

from pipeline.queue import JobOptions, QueueClient
from pipeline.redis.keys import Keys
from tests.support.workers import fast_settings, worker_env

MODULE = '''
import sys

from pipeline.queue import task


@task(name="startup.modules", expected_duration_s=0.5)
async def modules(ctx):
    return sorted(sys.modules)
'''

# Module (or package) -> why a worker without service-using tasks must not load it.
NOT_AT_START = {
    "rich": "Typer's help and the CLI's tables only (pipeline.cli.common loads it lazily)",
    "typer.rich_utils": "formats --help and Typer's error panels",
    "sqlalchemy": "the ledger: loaded by tasks that use the services",
    "alembic": "ledger migrations",
    "fastapi": "the HTTP API (`pipeline serve`)",
    "starlette": "the HTTP API",
    "httpx": "the LLM provider's HTTP client",
    "google": "the Gemini client",
    "pipeline.api": "the HTTP API",
    "pipeline.ledger": "the services",
    "pipeline.llm": "the services",
    "pipeline.storage": "the services",
    "tasks": "the product's tasks are imported only when no --import is given",
    "pipeline.queue.follow": "following jobs' events: producers (JobHandle.result, submit --wait)",
    "ctypes.util": "find_library runs `ldconfig -p` in a subprocess; mallopt is found in the "
    "interpreter's own symbols (pipeline/queue/memory.py)",
}


async def test_a_worker_starts_without_the_api_the_ledger_or_the_help_screens(
    tmp_path: Path, aredis: Redis, keys: Keys, redis_url: str
) -> None:
    (tmp_path / "startup_probe.py").write_text(MODULE)
    client = QueueClient(aredis, keys, fast_settings(keys.prefix))
    handle = await client.enqueue("startup.modules", _options=JobOptions(queue="default"))
    ran = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-P", "-m", "pipeline", "worker", "--burst", "--import", "startup_probe"],
        cwd=tmp_path, env=worker_env(redis_url, keys.prefix), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    loaded = set(await handle.result(timeout_s=5))
    assert "pipeline.queue.worker" in loaded  # the probe ran inside a worker
    found = {
        name: why
        for name, why in NOT_AT_START.items()
        if name in loaded or any(m.startswith(name + ".") for m in loaded)
    }
    assert not found, f"a worker's start-up imports {found}"
