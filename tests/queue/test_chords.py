"""Chords on a real Redis: a group of jobs and a callback that runs once when every member has
ended, whatever each member's fate; created once per callback id; run again on a requeue."""

from __future__ import annotations

from pipeline.queue import QueueClient, State
from tests.queue.conftest import worker
from tests.support import queue_tasks as qt
from tests.support.queue_tasks import count, set_flag
from tests.support.waiting import eventually


async def test_chord_runs_callback_once_with_failures_and_retries(
    client: QueueClient, redis_url: str
) -> None:
    calls = [
        qt.echo.call("a"),
        qt.flaky.call(1, "b"),
        qt.permanent.call(),
        qt.flaky.call(99),
        qt.echo.call("e"),
    ]
    group = await client.group(calls, then=qt.collect.call("done"), batch="b1")
    assert (await group.callback.info()).state == State.WAITING
    async with worker(redis_url, client, concurrency=3), worker(redis_url, client, concurrency=2):
        out = await group.callback.result(timeout_s=20)
    assert out == {
        "tag": "done",
        "states": ["complete", "complete", "failed", "dead", "complete"],
        "results": ["a", "b", None, None, "e"],
    }
    assert await count(client, "callback", group.callback.id) == 1


async def test_chord_with_a_callback_id_is_created_once(client: QueueClient) -> None:
    """A parent job that splits work and then runs again gets the same chord back."""
    calls = [qt.echo.call(i) for i in range(3)]
    then = qt.collect.call("once").with_options(job_id="parent-1-reduce")
    first = await client.group(calls, then=then)
    again = await client.group(calls, then=then)
    assert again.callback.id == first.callback.id and again.id == first.id
    assert [m.id for m in again.members] == [m.id for m in first.members]
    assert not again.callback.created
    assert (await client.depths())["queues"]["default"]["ready"] == 3


async def test_requeued_chord_member_runs_the_callback_again(
        client: QueueClient, redis_url: str) -> None:
    group = await client.group([qt.echo.call("a"), qt.fail_until_flag.call("fix")],
                               then=qt.collect.call("merge"))
    async with worker(redis_url, client, concurrency=2):
        first = await client.wait(group.callback.id, timeout_s=20)
        assert first.state == State.COMPLETE
        assert first.result["states"] == ["complete", "failed"]
        await set_flag(client, "fix")
        assert await client.requeue(group.members[1].id)
        await eventually(lambda: callback_count(client, group.callback.id, 2), what="rerun")
        job = await client.wait(group.callback.id, timeout_s=20)
    assert job.result["results"] == ["a", "fixed"]


async def callback_count(client: QueueClient, job_id: str, n: int) -> bool:
    info = await client.get(job_id)
    return await count(client, "callback", job_id) >= n and info.state == State.COMPLETE


async def test_empty_chord_runs_callback_at_once(client: QueueClient, redis_url: str) -> None:
    async with worker(redis_url, client, concurrency=1):
        group = await client.group([], then=qt.collect.call("empty"))
        assert await group.callback.result(timeout_s=10) == {
            "tag": "empty",
            "states": [],
            "results": [],
        }
