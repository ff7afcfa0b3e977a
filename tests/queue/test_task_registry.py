"""Task options are known where the task lives (issue 14, field case 06): workers publish what
their tasks declare, a producer without the import places jobs by it, the worker that claims
a job runs it with its own definition, and a name nobody registered fails loudly."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys

import pytest
import redis
from redis.asyncio import Redis

from pipeline.errors import JobTimeout, UnknownTask
from pipeline.queue import JobOptions, QueueClient, State, registry
from pipeline.queue.task import Task
from pipeline.redis.keys import Keys
from tests.queue import more_tasks
from tests.queue.conftest import InProcessWorker
from tests.support import ROOT
from tests.support.cli import run_cli
from tests.support.waiting import eventually
from tests.support.workers import WorkerProcess, fast_settings, worker_env

PRODUCER = """
import asyncio, json, sys
from pipeline.queue import JobOptions, QueueClient

async def main():
    client = await QueueClient.connect()
    try:
        plain = await client.enqueue("t.special", "a")
        explicit = await client.enqueue("t.special", "b", _options=JobOptions(timeout_s=7))
        print(json.dumps({"ids": [plain.id, explicit.id],
                          "imported": "tests.queue.more_tasks" in sys.modules}))
    finally:
        await client.aclose()

asyncio.run(main())
"""


@pytest.fixture
async def client(aredis: Redis, keys: Keys) -> QueueClient:
    return QueueClient(aredis, keys, fast_settings(keys.prefix))


async def test_enqueue_by_name_without_the_import_runs_with_declared_options(
    client: QueueClient, redis_url: str, key_prefix: str
) -> None:
    w = WorkerProcess(redis_url, key_prefix, "--queue", "special",
                      imports=("tests.queue.more_tasks",))  # fmt: skip
    try:
        await eventually(client.workers, what="worker registered")
        out = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", PRODUCER], cwd=ROOT,
            env=worker_env(redis_url, key_prefix), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        produced = json.loads(out.stdout)
        assert produced["imported"] is False  # the producer never saw the task's code
        plain_id, explicit_id = produced["ids"]
        plain = await client.job(plain_id).result(timeout_s=30)
        explicit = await client.job(explicit_id).result(timeout_s=30)
    finally:
        w.close()
    job = await client.get(plain_id)
    # placed by the published definition: its queue (served) and its priority
    assert job.queue == "special" and job.priority == 9 and job.state == State.COMPLETE
    # run with the worker's definition: lease 2 x 3 s, timeout 5 s, one attempt, its retries
    assert job.options == {}
    assert (job.lease_ms, job.expected_s, job.timeout_s) == (6000, 3.0, 5.0)
    assert job.max_attempts == 1 and job.retry_delays_s == [1, 2]
    assert plain == {"value": "a", "timeout_s": 5.0, "lease_ms": 6000}
    # what the caller set explicitly is the only option the job carries, and it wins
    other = await client.get(explicit_id)
    assert other.options == {"timeout_s": 7} and other.timeout_s == 7.0
    assert explicit["timeout_s"] == 7.0 and other.lease_ms == 6000


async def test_unknown_task_name_fails_loudly_and_creates_nothing(client: QueueClient) -> None:
    with pytest.raises(UnknownTask) as err:
        await client.enqueue("t.never_registered", 1)
    message = str(err.value)
    assert message.startswith("unknown task t.never_registered: no worker has registered it")
    assert "--import" in message and "JobOptions(queue=" in message
    assert [k async for k in client.redis.scan_iter(match=client.keys.job("*"), count=1000)] == []
    # naming the queue is the caller's explicit choice; the job stores only that choice
    options = JobOptions(queue="elsewhere", max_attempts=2)
    handle = await client.enqueue("t.never_registered", 1, _options=options)
    raw = await client.redis.hgetall(client.keys.job(handle.id))
    assert raw["queue"] == "elsewhere" and json.loads(raw["options"]) == {"max_attempts": 2}
    assert not {"expected_s", "timeout_s", "max_attempts", "retry_delays_s"} & set(raw)


def test_the_products_analysis_job_gets_its_declared_lease(
    pipeline_env: dict[str, str], sredis: redis.Redis, key_prefix: str
) -> None:
    """`pipeline submit` then a worker: tasks/analyze.py declares 60 s expected, 900 s timeout,
    so the lease is 120 s (case 06 B saw 20 s and 600 s)."""
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(pipeline_env, *args)

    submitted = cli("submit", str(ROOT / "examples" / "docs" / "invoice.pdf"), "--json")
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["documents"][0]["job_id"]
    before = sredis.hgetall(Keys(key_prefix).job(job_id))
    assert json.loads(before["options"]) == {} and "expected_s" not in before
    ran = cli("worker", "--burst", "--concurrency", "2")
    assert ran.returncode == 0, ran.stderr
    after = sredis.hgetall(Keys(key_prefix).job(job_id))
    assert after["state"] == "complete", after.get("error")
    assert int(after["lease_ms"]) == 120_000
    assert float(after["expected_s"]) == 60 and float(after["timeout_s"]) == 900


async def test_worker_warns_about_a_queue_no_task_uses(
    client: QueueClient, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pipeline.registry")
    async with InProcessWorker(redis_url, client.settings, queues=["high", "special"], burst=True):
        pass  # the warning comes when it starts
    warned = [r.getMessage() for r in caplog.records if "no registered task" in r.getMessage()]
    assert len(warned) == 1 and "'high'" in warned[0]  # t.special is declared on `special`
    assert "--priority high" in warned[0]  # says a priority is not a queue
    published = await registry.published(client.redis, client.keys)
    assert published["t.special"]["queue"] == "special"
    assert published["t.special"]["version"] == more_tasks.special.options()["version"]


async def test_a_different_definition_of_a_published_task_is_named(client: QueueClient) -> None:
    mine = more_tasks.special
    other = Task(name=mine.name, fn=mine.fn, queue="special", timeout_s=99)
    assert await registry.publish(client.redis, client.keys, [other], "old-worker") == []
    warnings = await registry.publish(client.redis, client.keys, [mine], "new-worker")
    assert len(warnings) == 1 and "old-worker" in warnings[0]
    assert other.options()["version"] in warnings[0]


async def test_waiting_on_a_job_no_worker_serves_says_so(
    client: QueueClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pipeline.client")
    handle = await client.enqueue(more_tasks.special, 1, _options=JobOptions(queue="orphan"))
    with pytest.raises(JobTimeout) as err:
        await handle.result(timeout_s=1.0)
    assert "no live worker serves queue 'orphan'" in str(err.value)
    assert "pipeline worker --queue orphan" in str(err.value)
    assert any("no live worker serves queue 'orphan'" in r.getMessage() for r in caplog.records)

