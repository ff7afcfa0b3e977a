"""A write sent again after its reply was lost (redis-py retries a command whose connection
dropped, as during a failover) must not do its work twice: enqueue, claim and finish replays
on a real Redis."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from pipeline.queue import JobOptions, QueueClient, State
from pipeline.queue.job import Job
from pipeline.queue.registry import claim_definitions
from pipeline.queue.scripts import settle_keys
from pipeline.redis.keys import EVENTS_MAXLEN, Keys
from tests.support import queue_tasks as qt
from tests.support.workers import fast_settings


@pytest.fixture
async def client(aredis: Redis, keys: Keys) -> QueueClient:
    return QueueClient(aredis, keys, fast_settings(keys.prefix))


async def claim(client: QueueClient, job_id: str, nonce: str) -> list[object]:
    k = client.keys
    reply: list[object] = await client.scripts.claim(
        keys=[k.queue("default"), k.active, k.fence, k.events, k.job(job_id)],
        args=["w1", 500, EVENTS_MAXLEN, "any", claim_definitions([qt.echo]), nonce, job_id],
    )
    return reply


async def test_enqueue_replayed_with_the_same_id_keeps_the_job(client: QueueClient) -> None:
    first = await client.enqueue(qt.echo, 1, _options=JobOptions(job_id="j1"))
    assert first.created
    await claim(client, "j1", "n1")
    again = await client.enqueue(qt.echo, 2, _options=JobOptions(job_id="j1"))
    assert not again.created and again.id == "j1"
    job = await client.get("j1")
    assert job.state == State.ACTIVE and job.args == [1]  # not reset to queued with new args


async def test_claim_replayed_returns_the_same_claim_and_no_other(client: QueueClient) -> None:
    await client.enqueue(qt.echo, 1, _options=JobOptions(job_id="j1"))
    first = await claim(client, "j1", "n1")
    replay = await claim(client, "j1", "n1")
    other = await claim(client, "j1", "n2")  # another call (or worker) gets nothing
    assert first[0] and replay == first and other == [None]  # Lua false is nil
    raw = dict(zip(first[0][::2], first[0][1::2], strict=True))  # type: ignore[index]
    assert raw["token"].endswith("-n1") and raw["attempt"] == "1"
    # resolved from the claiming worker's definition of t.echo (expected 0.5 s)
    assert raw["lease_ms"] == "1000" and raw["max_attempts"] == "3"
    assert json.loads(raw["retry_delays_s"]) == [10, 60, 300]


async def test_finish_replayed_is_applied_once(client: QueueClient) -> None:
    await client.enqueue(qt.echo, 1, _options=JobOptions(job_id="j1"))
    raw = (await claim(client, "j1", "n1"))[0]
    job = Job.from_hash(dict(zip(raw[::2], raw[1::2], strict=True)))  # type: ignore[index]
    args: list[str | int | float] = [
        job.id, job.token or "", "complete", '"done"', "", "", 60, 0, EVENTS_MAXLEN,
        "complete", "le_1", "count", "sum", 0.1, "",
    ]  # fmt: skip
    stat_keys = [client.keys.custom("s1"), client.keys.custom("s2")]
    keys = [*settle_keys(client.keys, job), *stat_keys]
    assert await client.scripts.finish(keys=keys, args=args) == "complete"
    assert await client.scripts.finish(keys=keys, args=args) == "complete"  # the replay: yes
    forged = [job.id, "7-forged", *args[2:]]
    assert await client.scripts.finish(keys=keys, args=forged) == 0  # a stale token is not
    assert await client.redis.hget(stat_keys[0], "complete") == "1"  # counted once
    events = cast(list[Any], await client.redis.xrange(client.keys.events))
    assert [e[1]["state"] for e in events].count("complete") == 1


async def test_finish_replayed_returns_the_outcome_it_applied(client: QueueClient) -> None:
    """The replay answers what the first call applied, whatever became of the job since:
    a retry applied, then the job cancelled while it waited, is still a retry (the worker
    counts and logs that, and its job-end hooks hear it); a retry that became `cancelled`
    (flagged while it ran), then run again by `pipeline retry`, is still `cancelled`."""
    stat_keys = [client.keys.custom("s1"), client.keys.custom("s2")]

    async def settle_retry(job_id: str) -> tuple[list[str], list[str | int | float]]:
        await client.enqueue(qt.echo, 1, _options=JobOptions(job_id=job_id))
        raw = (await claim(client, job_id, f"n-{job_id}"))[0]
        job = Job.from_hash(dict(zip(raw[::2], raw[1::2], strict=True)))  # type: ignore[index]
        args: list[str | int | float] = [
            job.id, job.token or "", "retry", "", "boom", "", 60, 10_000, EVENTS_MAXLEN,
            "retry", "le_1", "count", "sum", 0.1, "provider_error", "cancelled",
        ]  # fmt: skip
        return [*settle_keys(client.keys, job), *stat_keys], args

    keys, args = await settle_retry("j-retry")
    assert await client.scripts.finish(keys=keys, args=args) == "retry"
    assert await client.cancel("j-retry") == "cancelled"  # while it waited for its retry
    assert await client.scripts.finish(keys=keys, args=args) == "retry"  # the replay

    keys, args = await settle_retry("j-flagged")
    await client.redis.hset(client.keys.job("j-flagged"), "cancel", 1)  # while it ran
    assert await client.scripts.finish(keys=keys, args=args) == "cancelled"
    assert await client.requeue("j-flagged")  # `pipeline retry` runs it again
    assert await client.scripts.finish(keys=keys, args=args) == "cancelled"  # the replay
    settled = await client.redis.hgetall(stat_keys[0])
    assert settled == {"retry": "1", "cancelled": "1"}  # each counted once
