"""A job's life on a real Redis, with workers running in the test's event loop: results,
ordering, idempotent enqueue, delays, cancel, retries and the dead letter, timeouts, fencing,
and the event stream."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from pipeline.errors import JobFailed, NotSerializable
from pipeline.queue import JobOptions, QueueClient, State
from pipeline.queue.stats import Stats
from tests.queue.conftest import worker
from tests.support import queue_tasks as qt
from tests.support.queue_tasks import count, set_flag, tkey
from tests.support.waiting import eventually


async def test_result_roundtrip_json_only(client: QueueClient, redis_url: str) -> None:
    async with worker(redis_url, client, concurrency=2):
        handle = await client.enqueue(qt.echo, {"a": [1, 2.5, "x"]})
        assert await handle.result(timeout_s=10) == {"a": [1, 2.5, "x"]}
    raw = await client.redis.hgetall(client.keys.job(handle.id))
    assert json.loads(raw["args"]) == [{"a": [1, 2.5, "x"]}]
    assert raw["state"] == "complete"
    with pytest.raises(NotSerializable):
        await client.enqueue(qt.echo, object())


async def test_prefetch_of_one_short_jobs_flow_around_a_long_one(
    client: QueueClient, redis_url: str
) -> None:
    """Two one-slot workers, one long job, ten short: every short job runs on the other worker
    while the long one is still running."""
    long_job = await client.enqueue(qt.block, "long-release")
    async with (
        worker(redis_url, client, concurrency=1, worker_id="w1") as w1,
        worker(redis_url, client, concurrency=1, worker_id="w2") as w2,
    ):
        await eventually(lambda: count(client, "started", long_job.id), what="long job start")
        shorts = [await client.enqueue(qt.echo, i) for i in range(10)]
        for h in shorts:
            assert await h.result(timeout_s=20) is not None
        long_info = await long_job.info()
        assert long_info.state == State.ACTIVE  # still running while all ten finished
        other = "w2" if long_info.worker == "w1" else "w1"
        for h in shorts:
            assert (await h.info()).worker == other
        assert len((w1 if long_info.worker == "w1" else w2).running) == 1
        await set_flag(client, "long-release")
        assert await long_job.result(timeout_s=20) == long_info.worker


async def test_fifty_concurrent_enqueues_with_one_key_make_one_job(
    client: QueueClient, redis_url: str
) -> None:
    clients = [
        QueueClient(Redis.from_url(redis_url, decode_responses=True), client.keys, client.settings)
        for _ in range(5)
    ]
    try:
        handles = await asyncio.gather(
            *(
                clients[i % 5].enqueue(qt.echo, i, _options=JobOptions(idempotency_key="doc-1"))
                for i in range(50)
            )
        )
    finally:
        for c in clients:
            await c.aclose()
    assert len({h.id for h in handles}) == 1
    assert sum(h.created for h in handles) == 1
    job_keys = [k async for k in client.redis.scan_iter(match=client.keys.job("*"), count=1000)]
    assert len(job_keys) == 1
    assert (await client.depths())["queues"]["default"]["ready"] == 1


async def test_priorities_strict_within_a_queue_and_queues_in_given_order(
    client: QueueClient, redis_url: str
) -> None:
    plan = [
        ("low-1", "low", "a"),
        ("high-1", "high", "a"),
        ("norm-1", 5, "a"),
        ("high-2", 9, "a"),
        ("b-high", "high", "b"),
        ("low-2", 0, "a"),
    ]
    for label, prio, queue in plan:
        await client.enqueue(qt.record, label, _options=JobOptions(priority=prio, queue=queue))
    depths = await client.depths()
    assert depths["queues"]["a"]["by_priority"] == {0: 2, 5: 1, 9: 2}
    async with worker(redis_url, client, concurrency=1, queues=["a", "b"]):
        await eventually(lambda: client.redis.llen(tkey(client, "order")), what="first run")
        await eventually(async_eq(client.redis.llen, tkey(client, "order"), 6), what="all ran")
    order = await client.redis.lrange(tkey(client, "order"), 0, -1)
    assert order == ["high-1", "high-2", "norm-1", "low-1", "low-2", "b-high"]


def async_eq(
    fn: Callable[[str], Awaitable[object]], arg: str, expected: object
) -> Callable[[], Awaitable[bool]]:
    """A check for `eventually`: does `await fn(arg)` equal `expected` yet?"""

    async def check() -> bool:
        return bool(await fn(arg) == expected)

    return check


async def test_delayed_job_waits_until_due(client: QueueClient, redis_url: str) -> None:
    async with worker(redis_url, client, concurrency=2):
        handle = await client.enqueue(qt.echo, "later", _options=JobOptions(delay_s=0.6))
        assert (await handle.info()).state == State.SCHEDULED
        assert await handle.result(timeout_s=10) == "later"
    raw = await client.redis.hmget(client.keys.job(handle.id), ["enqueued_ms", "started_ms"])
    assert int(raw[1]) - int(raw[0]) >= 600  # server clock: not started before it was due


async def test_job_at_an_absolute_time(client: QueueClient, redis_url: str) -> None:
    from datetime import UTC, datetime, timedelta

    at = datetime.now(UTC) + timedelta(seconds=5)
    async with worker(redis_url, client, concurrency=1):
        handle = await client.enqueue(qt.echo, "at", _options=JobOptions(at=at))
        state = (await handle.info()).state
        if datetime.now(UTC) < at:  # a very slow machine may have reached `at` already
            assert state == State.SCHEDULED
        assert await handle.result(timeout_s=60) == "at"
    started_ms = int(await client.redis.hget(client.keys.job(handle.id), "started_ms"))
    assert started_ms >= int(at.timestamp() * 1000) - 50  # Redis and this host share a clock


async def test_cancel_queued_and_running(client: QueueClient, redis_url: str) -> None:
    queued = await client.enqueue(qt.echo, "never", _options=JobOptions(queue="idle"))
    assert await queued.cancel() == "cancelled"
    assert (await queued.info()).state == State.CANCELLED
    assert (await client.depths())["queues"]["idle"]["ready"] == 0

    async with worker(redis_url, client, concurrency=1):
        running = await client.enqueue(qt.block, "never-set")
        await eventually(lambda: count(client, "started", running.id), what="start")
        assert await running.cancel() == "cancelling"
        job = await client.wait(running.id, timeout_s=10)
        assert job.state == State.CANCELLED
        assert await client.redis.zscore(client.keys.active, running.id) is None
    assert await count(client, "completed", running.id) == 0
    with pytest.raises(JobFailed, match="cancelled"):
        await running.result(timeout_s=1)


async def test_cancel_reaches_a_long_running_job_before_its_next_renewal(
    client: QueueClient, redis_url: str
) -> None:
    """The liveness thread reads running jobs' cancel flags every tick, not only with their
    renewals: a job whose lease (2 x 120 s) is next renewed 80 s after its start stops within
    the test's 10 s."""
    async with worker(redis_url, client, concurrency=2):
        long_lease = JobOptions(expected_duration_s=120)
        running = await client.enqueue(qt.block, "never-set", _options=long_lease)
        other = await client.enqueue(qt.block, "never-set-either", _options=long_lease)
        await eventually(lambda: count(client, "started", running.id), what="start")
        await eventually(lambda: count(client, "started", other.id), what="second start")
        assert await running.cancel() == "cancelling"
        job = await client.wait(running.id, timeout_s=10)
        assert job.state == State.CANCELLED
        assert (await other.info()).state == State.ACTIVE  # only the flagged job stops
        assert await other.cancel() == "cancelling"
        assert (await client.wait(other.id, timeout_s=10)).state == State.CANCELLED


async def test_retries_follow_schedule_then_dead_letter_and_requeue(
    client: QueueClient, redis_url: str
) -> None:
    async with worker(redis_url, client, concurrency=2):
        recovers = await client.enqueue(qt.flaky, 2, "fine")
        assert await recovers.result(timeout_s=10) == "fine"
        info = await recovers.info()
        assert info.attempt == 3 and await count(client, "ran", recovers.id) == 3

        exhausted = await client.enqueue(qt.flaky, 99)
        job = await client.wait(exhausted.id, timeout_s=10)
        assert job.state == State.DEAD
        assert "planned failure 3" in (job.error or "") and "attempt 3 of 3" in (job.error or "")
        assert "RuntimeError" in (job.traceback or "")
        assert [j.id for j in await client.dead_jobs()] == [exhausted.id]

        assert await client.requeue(exhausted.id)
        await eventually(lambda: count_at_least(client, "ran", exhausted.id, 6), what="rerun")
        job = await client.wait(exhausted.id, timeout_s=10)
        assert job.state == State.DEAD and job.attempt == 3


async def count_at_least(client: QueueClient, what: str, job_id: str, n: int) -> bool:
    return await count(client, what, job_id) >= n


async def test_postponed_job_keeps_its_attempts(client: QueueClient, redis_url: str) -> None:
    """Waiting for a quota or budget window is not a failure: max_attempts=1 still completes."""
    async with worker(redis_url, client, concurrency=1):
        handle = await client.enqueue(qt.postponed, 3)
        assert await handle.result(timeout_s=10) == 4
    info = await handle.info()
    assert info.attempt == 1 and info.state == State.COMPLETE


async def test_permanent_error_and_unknown_task_fail_without_retry(
    client: QueueClient, redis_url: str
) -> None:
    async with worker(redis_url, client, concurrency=2):
        perm = await client.enqueue(qt.permanent)
        job = await client.wait(perm.id, timeout_s=10)
        assert job.state == State.FAILED and job.attempt == 1
        assert "can never work" in (job.error or "")
        # routed explicitly: a name no worker published is refused at enqueue otherwise
        unknown = await client.enqueue("no.such.task", 1, _options=JobOptions(queue="default"))
        job = await client.wait(unknown.id, timeout_s=10)
        assert job.state == State.FAILED
        assert "no task named 'no.such.task'" in (job.error or "")
        assert "--import" in (job.error or "")


async def test_hard_timeout(client: QueueClient, redis_url: str) -> None:
    async with worker(redis_url, client, concurrency=1):
        handle = await client.enqueue(qt.slow_timeout)
        job = await client.wait(handle.id, timeout_s=10)
    assert job.state == State.DEAD
    assert "timed out after 0.2s" in (job.error or "")


@pytest.mark.parametrize(("unsortable", "said"), [
    # an exception whose __str__ raises: its message stands in for it
    (qt.unsayable, "Unsayable: <Unsayable: its message could not be read>"),
    # one whose __class__ raises, so no isinstance() check can sort it: the catch-all
    (qt.unreadable, "the worker could not read how this attempt ended (ValueError)"),
])  # fmt: skip
async def test_an_attempt_whose_end_cannot_be_read_still_settles_its_job(
    client: QueueClient, redis_url: str, unsortable: Any, said: str
) -> None:
    """The settlement is worked out in the body's done callback, where an error is only
    logged: such an error left the job active for ever (its lease renewed) and the worker's
    stop spinning 30 s on it. Now it is settled as the job's error."""
    async with worker(redis_url, client, concurrency=1) as w:
        handle = await client.enqueue(unsortable)
        job = await client.wait(handle.id, timeout_s=10)
        await eventually(lambda: asyncio.sleep(0, not w.running), what="the entry gone")
    assert job.state == State.DEAD
    assert said in (job.error or ""), job.error


async def test_a_task_may_write_into_its_jobs_empty_hints(
    client: QueueClient, redis_url: str
) -> None:
    """A job's empty hints are a dict of its own (a read-only one shared by every job, tried
    to save ~190 B a running job, failed such a task with a TypeError)."""
    async with worker(redis_url, client, concurrency=2):
        first, second = [await client.enqueue(qt.marks) for _ in range(2)]
        assert await first.result(timeout_s=10) == ["seen"]
        assert await second.result(timeout_s=10) == ["seen"]


async def test_a_shorter_timeout_started_later_stops_only_its_own_job(
    client: QueueClient, redis_url: str
) -> None:
    """One timer serves every running job's timeout (timeouts.py): a job with a 0.2 s timeout
    started after one with 600 s is stopped on its own, and the long one runs on."""
    async with worker(redis_url, client, concurrency=2):
        long_job = await client.enqueue(qt.block, "long-timeout-release", "done")
        await eventually(lambda: count(client, "started", long_job.id), what="start")
        short = await client.enqueue(qt.slow_timeout)
        job = await client.wait(short.id, timeout_s=10)
        assert job.state == State.DEAD and "timed out after 0.2s" in (job.error or "")
        assert (await long_job.info()).state == State.ACTIVE
        await set_flag(client, "long-timeout-release")
        assert await long_job.result(timeout_s=20) == "done"


async def test_cancel_requested_during_a_failing_attempt_is_not_retried(
        client: QueueClient, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipeline.worker.jobs")
    async with worker(redis_url, client, concurrency=1) as w:
        handle = await client.enqueue(qt.fail_slowly, "fail-now")
        await eventually(lambda: count(client, "started", handle.id), what="start")
        # the flag is set and the attempt fails before the worker's next renewal sees it
        await client.redis.hset(client.keys.job(handle.id), "cancel", 1)
        await set_flag(client, "fail-now")
        job = await client.wait(handle.id, timeout_s=20)
        # what the worker says the attempt came to is what became of the job, not the
        # retry its task asked for (counted once the settlement's reply is back)

        async def counted() -> bool:
            return w.counters.cancelled + w.counters.retried > 0

        await eventually(counted, what="the settlement counted")
        assert (w.counters.cancelled, w.counters.retried) == (1, 0), w.counters
    assert job.state == State.CANCELLED and job.reason == "cancelled"
    assert await count(client, "started", handle.id) == 1
    settled = (await Stats(client.redis, client.keys).read()).settled
    assert {o: n for (_, task, o), n in settled.items() if task == "t.fail_slowly"} == {
        "cancelled": 1}
    ended = [r.getMessage() for r in caplog.records if " started " not in r.getMessage()]
    assert any(f"job {handle.id} t.fail_slowly cancelled in" in line for line in ended), ended
    assert not any(" retry in " in line for line in ended), ended


async def test_stale_token_is_refused(client: QueueClient, redis_url: str) -> None:
    """A worker whose lease was taken over cannot complete, fail or renew the job."""
    from pipeline.queue.scripts import settle_keys

    async with worker(redis_url, client, concurrency=1, worker_id="first") as first:
        handle = await client.enqueue(qt.block, "stale-release", "from-first")
        await eventually(lambda: count(client, "started", handle.id), what="start")
        old = await handle.info()
        # The lease runs out as if the worker had stalled: the sweeper requeues the job. Set
        # again while the first claim holds it: a renewal of the first claim can land just
        # after (a handed-off job's short first lease is renewed at once, handoff.py).
        async def stalled_then_reclaimed() -> bool:
            await client.redis.eval(_EXPIRE_FIRST_CLAIM, 2, client.keys.job(handle.id),
                                    client.keys.active, handle.id, old.token or "")  # fmt: skip
            return await first_attempt_over(client, handle.id)

        await eventually(stalled_then_reclaimed, what="requeue + reclaim")
        refused = await client.scripts.finish(
            keys=settle_keys(client.keys, old),
            args=[old.id, old.token, "complete", '"forged"', "", "", 60, 0, 1000],
        )
        assert refused == 0
        await set_flag(client, "stale-release")
        result = await handle.result(timeout_s=20)
    assert result == "from-first"  # the second claim completed: same worker, new token
    assert first.counters.claimed == 2 and first.counters.completed == 1
    info = await handle.info()
    assert info.attempt == 2 and info.lease_expiries == 1
    assert info.token is None and old.token is not None


# The lease deadline set to 0 while the job is still held by the given claim (its token).
_EXPIRE_FIRST_CLAIM = """
if redis.call('HGET', KEYS[1], 'token') == ARGV[2] then
  redis.call('ZADD', KEYS[2], 'XX', 0, ARGV[1])
end
return 1
"""


async def first_attempt_over(client: QueueClient, job_id: str) -> bool:
    info = await client.get(job_id)
    return info.attempt == 2 and info.state == State.ACTIVE


async def test_events_follow_a_batch_live(client: QueueClient, redis_url: str) -> None:
    cursor = await client.last_event_id()
    async with worker(redis_url, client, concurrency=4):
        handles = [
            await client.enqueue(qt.echo, i, _options=JobOptions(batch="B")) for i in range(3)
        ]
        await client.enqueue(qt.echo, "other", _options=JobOptions(batch="C"))
        seen: dict[str, list[str]] = {}
        loop = asyncio.get_running_loop()
        async for ev in client.events(since=cursor, batch="B", until=loop.time() + 20):
            seen.setdefault(ev.job, []).append(ev.state)
            if sum("complete" in s for s in seen.values()) == 3:
                break
    assert set(seen) == {h.id for h in handles}
    for states in seen.values():
        assert states[0] == "queued" and "active" in states and states[-1] == "complete"
