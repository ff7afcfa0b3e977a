"""Queue failure paths with real `pipeline worker` processes: SIGKILL mid-job, a job far
longer than expected on a live worker, graceful shutdown, a chord surviving a dead worker,
and a Redis restart (embedded, append-only) in the middle of a run."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from pipeline.queue import JobOptions, QueueClient, State
from pipeline.redis.connection import connect_redis
from pipeline.redis.keys import Keys
from tests.support import queue_tasks as qt
from tests.support.queue_tasks import count, tkey
from tests.support.waiting import eventually
from tests.support.workers import WorkerProcess, fast_settings

pytestmark = pytest.mark.slow


async def test_sigkill_mid_job_another_worker_finishes_once(
    client: QueueClient, redis_url: str, key_prefix: str
) -> None:
    a = WorkerProcess(redis_url, key_prefix, "--concurrency", "1")
    try:
        handle = await client.enqueue(qt.block, "go", "done")
        await eventually(lambda: count(client, "started", handle.id), what="start on A")
        first = await handle.info()
        a.kill()  # SIGKILL: no cleanup, the lease is all that is left
        await client.redis.set(tkey(client, "flag", "go"), 1)
        b = WorkerProcess(redis_url, key_prefix, "--concurrency", "1")
        try:
            assert await handle.result(timeout_s=60) == "done"
        finally:
            b.close()
    finally:
        a.close()
    info = await handle.info()
    assert info.attempt == 2 and info.lease_expiries == 1
    assert info.worker != first.worker
    assert await count(client, "completed", handle.id) == 1
    assert await count(client, "started", handle.id) == 2


async def test_job_five_times_its_expected_duration_is_never_handed_over(
    client: QueueClient, redis_url: str, key_prefix: str
) -> None:
    """expected 0.5 s (lease 1 s, renewed every third); it runs 2.5 s next to an idle worker."""
    a = WorkerProcess(redis_url, key_prefix, "--concurrency", "1")
    try:
        await eventually(client.workers, what="A registered")
        handle = await client.enqueue(qt.sleep, 2.5, _options=JobOptions(expected_duration_s=0.5))
        await eventually(lambda: count(client, "started", handle.id), what="start on A")
        b = WorkerProcess(redis_url, key_prefix, "--concurrency", "4")
        try:
            winner = await handle.result(timeout_s=60)
        finally:
            b.close()
    finally:
        a.close()
    info = await handle.info()
    assert info.lease_ms == 1000
    assert info.attempt == 1 and info.lease_expiries == 0 and info.worker == winner
    assert await count(client, "started", handle.id) == 1
    log = await client.redis.lrange(tkey(client, "log"), 0, -1)
    assert all(entry.endswith(f":{winner}:1") for entry in log)


async def test_sigterm_finishes_within_grace_and_releases_the_rest(
    client: QueueClient, redis_url: str, key_prefix: str
) -> None:
    w = WorkerProcess(redis_url, key_prefix, "--concurrency", "2", PIPELINE_SHUTDOWN_GRACE_S="3")
    try:
        short = await client.enqueue(qt.block, "short-go", "short")
        long = await client.enqueue(qt.block, "never")
        await eventually(lambda: count(client, "started", short.id), what="short start")
        await eventually(lambda: count(client, "started", long.id), what="long start")
        w.signal(signal.SIGTERM)
        await eventually(lambda: worker_stopping(client), what="stop claiming")
        extra = await client.enqueue(qt.echo, "after-sigterm")
        await client.redis.set(tkey(client, "flag", "short-go"), 1)
        assert await short.result(timeout_s=30) == "short"
        assert w.proc.wait(30) == 0
        output = w.output()
    finally:
        w.close()
    released = await long.info()
    assert released.state == State.QUEUED and released.attempt == 0
    assert await client.redis.zscore(client.keys.active, long.id) is None
    assert (await extra.info()).state == State.QUEUED  # never claimed after the signal
    assert "stopping: no new jobs" in output


async def worker_stopping(client: QueueClient) -> bool:
    return any(w.get("state") == "stopping" for w in await client.workers())


async def test_second_signal_releases_running_jobs_at_once(
    client: QueueClient, redis_url: str, key_prefix: str
) -> None:
    w = WorkerProcess(redis_url, key_prefix, "--concurrency", "1", PIPELINE_SHUTDOWN_GRACE_S="120")
    try:
        job = await client.enqueue(qt.block, "never")
        await eventually(lambda: count(client, "started", job.id), what="start")
        w.signal(signal.SIGTERM)
        await eventually(lambda: worker_stopping(client), what="stop claiming")
        w.signal(signal.SIGINT)
        assert w.proc.wait(30) == 0
    finally:
        w.close()
    info = await job.info()
    assert info.state == State.QUEUED and info.attempt == 0


async def test_chord_callback_once_when_a_member_worker_dies(
    client: QueueClient, redis_url: str, key_prefix: str
) -> None:
    calls = [qt.echo.call(i) for i in range(6)] + [qt.block.call("chord-go", "slow")]
    a = WorkerProcess(redis_url, key_prefix, "--concurrency", "8")
    try:
        group = await client.group(calls, then=qt.collect.call("chord"))
        slow = group.members[-1]
        await eventually(lambda: count(client, "started", slow.id), what="slow member start")
        a.kill()
        await client.redis.set(tkey(client, "flag", "chord-go"), 1)
        b = WorkerProcess(redis_url, key_prefix, "--concurrency", "8")
        c = WorkerProcess(redis_url, key_prefix, "--concurrency", "8")
        try:
            out = await group.callback.result(timeout_s=60)
        finally:
            b.close()
            c.close()
    finally:
        a.close()
    assert out["results"] == [0, 1, 2, 3, 4, 5, "slow"]
    assert await count(client, "callback", group.callback.id) == 1
    assert (await slow.info()).attempt == 2


async def test_redis_restart_mid_run_loses_no_job(tmp_path: Path, key_prefix: str) -> None:
    from pipeline.redis.server import EmbeddedRedis

    server = EmbeddedRedis(tmp_path / "home")
    server.start()
    redis = connect_redis(server.url)
    client = QueueClient(redis, Keys(key_prefix), fast_settings(key_prefix))
    w = WorkerProcess(server.url, key_prefix, "--concurrency", "4")
    try:
        handles = [await client.enqueue(qt.sleep, 0.2) for _ in range(30)]
        await eventually(lambda: completed_at_least(client, handles, 5), what="some done")
        assert server.stop()  # SHUTDOWN: the append-only file is flushed
        server.start()
        for h in handles:
            await client.wait(h.id, timeout_s=90)
        states = [(await h.info()).state for h in handles]
        assert states == [State.COMPLETE] * 30
        for h in handles:
            assert await count(client, "completed", h.id) >= 1
    finally:
        w.close()
        await redis.aclose()
        server.stop()


async def completed_at_least(client: QueueClient, handles: list, n: int) -> bool:  # type: ignore[type-arg]
    done = 0
    for h in handles:
        done += (await h.info()).state == State.COMPLETE
    return done >= n


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


async def test_pool_processes_die_with_their_worker(
        client: QueueClient, redis_url: str, key_prefix: str) -> None:
    """A SIGKILLed (or OOM-killed) worker leaves no PDF-parsing process behind."""
    w = WorkerProcess(redis_url, key_prefix, "--concurrency", "1")
    try:
        out = await (await client.enqueue(qt.cpu, 2)).result(timeout_s=60)
        children = {o["pid"] for o in out}
        assert children and all(_alive(pid) for pid in children)
        w.kill()

        async def gone() -> bool:
            return not any(_alive(pid) for pid in children)

        await eventually(gone, timeout_s=20, what="pool processes to exit")
    finally:
        w.close()
