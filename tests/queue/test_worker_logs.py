"""A worker's log tells what it did: a start-up line naming queues and slots, one line per
job start and end (job id, task, attempt, duration; document and cost for analysis jobs),
the traceback of an unexpected exception, library noise off unless --log-level debug, and
JSON lines with --log-format json. Real Redis, `pipeline worker` processes."""

from __future__ import annotations

import json

import redis

from pipeline.queue import QueueClient
from pipeline.redis.connection import connect_redis
from tests.scenarios.helpers import analysis_worker
from tests.support import metrics_tasks
from tests.support.cli import EXAMPLES
from tests.support.cli import run_cli as cli
from tests.support.waiting import until
from tests.support.workers import WorkerProcess, fast_settings


async def _work_and_break(redis_url: str, prefix: str) -> tuple[str, str]:
    client = QueueClient(connect_redis(redis_url), settings=fast_settings(prefix))
    try:
        ok = await client.enqueue(metrics_tasks.work, 7)
        bad = await client.enqueue(metrics_tasks.broken, "the parser choked on page 3")
        await ok.result(timeout_s=60)
        assert (await client.wait(bad.id, 60)).state.value == "dead"
        return ok.id, bad.id
    finally:
        await client.aclose()


async def test_a_line_per_job_and_the_traceback_of_a_failing_task(
    redis_url: str, key_prefix: str, sredis: redis.Redis
) -> None:
    worker = WorkerProcess(redis_url, key_prefix, "--concurrency", "3",
                           imports=("tests.support.metrics_tasks",))  # fmt: skip
    try:
        ok, bad = await _work_and_break(redis_url, key_prefix)
        until(lambda: f"job {bad} m.broken dead in" in worker.output(), 30, "the dead line")
        out = worker.output()
    finally:
        worker.close()
    assert "queues default, 3 slots" in out
    assert f"job {ok} m.work started (attempt 1/3)" in out
    assert f"job {ok} m.work complete in " in out
    assert f"job {bad} m.broken retry in " in out and "(attempt 1/2, again in" in out
    dead = out[out.index(f"job {bad} m.broken dead in"):]
    assert "RuntimeError: the parser choked on page 3 (attempt 2 of 2)" in dead.splitlines()[0]
    assert "(attempt 2/2, not retried: its last attempt)" in dead.splitlines()[0]
    assert "Traceback (most recent call last):" in dead
    assert "raise RuntimeError(message)" in dead


async def test_sigusr1_prints_every_threads_stack_and_the_worker_goes_on(
    redis_url: str, key_prefix: str, sredis: redis.Redis
) -> None:
    """A job that logs nothing more: `kill -USR1 <pid>` shows where it waits, even while it
    blocks the event loop (m.stall, a synchronous wait), and the job then completes."""
    import signal

    keys = fast_settings(key_prefix)
    worker = WorkerProcess(redis_url, key_prefix, imports=("tests.support.metrics_tasks",))
    client = QueueClient(connect_redis(redis_url), settings=keys)
    try:
        stalled = await client.enqueue(metrics_tasks.stall, "go")
        until(lambda: sredis.exists(client.keys.custom("m", "blocking", "1")), 60,
              "the task blocking its loop")  # fmt: skip
        worker.signal(signal.SIGUSR1)
        until(lambda: "in stall" in worker.output(), 30, "the stacks")
        sredis.set(client.keys.custom("m", "flag", "go"), 1)
        assert await stalled.result(timeout_s=60) == "stalled attempt"  # it went on
        out = worker.output()
    finally:
        worker.close()
        await client.aclose()
    assert "Thread 0x" in out and "metrics_tasks.py" in out, out


async def test_json_lines_carry_the_job_fields_and_the_traceback(
    redis_url: str, key_prefix: str, sredis: redis.Redis
) -> None:
    worker = WorkerProcess(redis_url, key_prefix, "--log-format", "json",
                           imports=("tests.support.metrics_tasks",))  # fmt: skip
    try:
        _, bad = await _work_and_break(redis_url, key_prefix)
        until(lambda: '"outcome": "dead"' in worker.output(), 30, "the dead record")
        lines = [ln for ln in worker.output().splitlines() if ln.strip()]
    finally:
        worker.close()
    records = [json.loads(ln) for ln in lines]  # every line is one JSON object
    [dead] = [r for r in records if r.get("job_id") == bad and r.get("outcome") == "dead"]
    assert dead["task"] == "m.broken" and dead["level"] == "error" and dead["attempt"] == 2
    assert dead["duration_s"] >= 0
    assert "RuntimeError: the parser choked on page 3" in dead["traceback"]
    assert "\n" not in dead["message"]


def test_library_noise_is_off_by_default_and_back_at_debug(
    pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis
) -> None:
    from tests.support.emulator import start_emulator

    with start_emulator() as emu:
        env = {**pipeline_env, **emu.env, "GOOGLE_API_KEY": ""}
        outputs = {}
        for level in ("info", "debug"):
            worker = analysis_worker(redis_url, env, "--log-level", level)
            try:
                r = cli(env, "submit", EXAMPLES[len(outputs)], "--wait")
                assert r.returncode == 0, r.stdout + r.stderr + worker.output()
                outputs[level] = worker.output()
            finally:
                worker.close()
    info, debug = outputs["info"], outputs["debug"]
    name = EXAMPLES[0]
    assert "analyze_document complete in" in info and f"document={name}" in info
    assert "cost_usd=0.0" in info
    for noise in ("HTTP Request:", "AFC is enabled", "alembic"):
        assert noise not in info, noise
    assert "HTTP Request:" in debug
