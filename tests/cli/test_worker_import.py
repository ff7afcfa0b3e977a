"""`pipeline worker --import mymodule` from the module's own folder (issue 14): found there as
Celery, RQ and ARQ users expect, and a module that is not found is named with the folders
searched and the fix. `python -P` runs the CLI as its console script does: without the
current directory on sys.path."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from pipeline.queue import JobOptions, QueueClient
from pipeline.redis.keys import Keys
from tests.support.workers import fast_settings, worker_env

MODULE = '''
from pipeline.queue import task


@task(name="cwd.hello", expected_duration_s=0.5)
async def hello(ctx, who):
    return f"hello {who} from {__file__}"
'''


def run_worker(
    folder: Path, redis_url: str, prefix: str, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-P", "-m", "pipeline", "worker", "--burst", *args],
        cwd=folder, env=worker_env(redis_url, prefix), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


async def test_import_finds_a_module_in_the_current_folder(
    tmp_path: Path, aredis: Redis, keys: Keys, redis_url: str
) -> None:
    (tmp_path / "mymodule.py").write_text(MODULE)
    client = QueueClient(aredis, keys, fast_settings(keys.prefix))
    handle = await client.enqueue("cwd.hello", "world", _options=JobOptions(queue="default"))
    ran = await asyncio.to_thread(run_worker, tmp_path, redis_url, keys.prefix,
                                  "--import", "mymodule")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert await handle.result(timeout_s=5) == f"hello world from {tmp_path / 'mymodule.py'}"


def test_a_module_that_is_not_there_is_named_with_the_search_path_and_the_fix(
    tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    ran = run_worker(tmp_path, redis_url, key_prefix, "--import", "nosuchmodule")
    assert ran.returncode == 1
    assert "cannot import task module 'nosuchmodule': no module named 'nosuchmodule'" in ran.stderr
    assert "Searched" in ran.stderr and str(tmp_path) in ran.stderr
    assert "Fix: run the worker from the folder that holds nosuchmodule.py" in ran.stderr
    assert "Traceback" not in ran.stderr


@pytest.mark.parametrize("body", ["import not_installed_dependency\n", "def broken(:\n"])
def test_a_module_that_fails_to_import_names_itself_and_the_cause(
    tmp_path: Path, redis_url: str, key_prefix: str, body: str
) -> None:
    (tmp_path / "mymodule.py").write_text(body)
    ran = run_worker(tmp_path, redis_url, key_prefix, "--import", "mymodule")
    assert ran.returncode == 1 and "cannot import task module 'mymodule'" in ran.stderr
    assert ("not_installed_dependency" in ran.stderr) or ("SyntaxError" in ran.stderr)
    assert "Traceback" not in ran.stderr
