"""A queued job's record stays a compact listpack on a real Redis (pipeline/queue/record.py):
long arguments are stored in pieces and the idempotency key as a digest, and neither changes
what the job runs with, what a reader sees, or what the idempotency key dedupes."""

from __future__ import annotations

from redis.asyncio import Redis

from pipeline.queue import JobOptions, QueueClient
from pipeline.queue.record import LISTPACK_VALUE_BYTES, idempotency_digest
from tests.queue.conftest import worker
from tests.support import queue_tasks as qt

# A document job's argument as tasks/runs.py writes it (~300 B of JSON, non-ASCII name).
DOC = {
    "sha256": "ab" * 32,
    "name": "/home/someone/scans/facture-été-0001.pdf",
    "model": "gemini-3.5-flash-lite",
    "prompt_version": "analyze-v1+ebc98345",
    "mode": "interactive",
    "mode_requested": "interactive",
    "mode_why": "interactive, as asked",
}
KEY = f"analyze:{'ab' * 32}:gemini-3.5-flash-lite:analyze-v1+ebc98345"  # 111 characters


async def _encoding(redis: Redis, key: str) -> str:
    return str(await redis.object("encoding", key))


async def test_a_queued_job_with_long_args_and_key_is_a_listpack_and_dedupes(
    client: QueueClient,
) -> None:
    first = await client.enqueue(qt.echo, DOC, _options=JobOptions(idempotency_key=KEY))
    again = await client.enqueue(qt.echo, {"other": 1}, _options=JobOptions(idempotency_key=KEY))
    assert first.created and not again.created and again.id == first.id  # same key, same job
    record = client.keys.job(first.id)
    assert await _encoding(client.redis, record) == "listpack"
    raw = await client.redis.hgetall(record)
    assert max(len(v.encode()) for v in raw.values()) <= LISTPACK_VALUE_BYTES
    job = await client.get(first.id)
    assert job.args == [DOC] and job.kwargs == {}  # whole again, as enqueued
    assert job.idempotency_key == idempotency_digest(KEY)
    assert await client.redis.get(client.keys.idempotency(idempotency_digest(KEY))) == first.id
    # enqueue_many dedupes by the same digest, against Redis and within its own calls
    many = await client.enqueue_many([qt.echo.call({"n": n}).with_options(idempotency_key=KEY)
                                      for n in range(3)])  # fmt: skip
    assert {h.id for h in many} == {first.id} and not any(h.created for h in many)


async def test_the_worker_runs_with_the_arguments_whole(
    client: QueueClient, redis_url: str
) -> None:
    """Arguments in pieces (positional or keyword) and arguments too long for pieces (stored
    whole) reach the task as they were enqueued."""
    big = {"text": "x" * 500, "nested": [DOC, DOC]}  # > 16 pieces: stored whole
    async with worker(redis_url, client, concurrency=2):
        small = await client.enqueue(qt.echo, DOC)
        keyword = await client.enqueue(qt.echo, value={"note": "é" * 40, **DOC})
        large = await client.enqueue(qt.echo, big)
        assert await small.result(timeout_s=30) == DOC
        assert await keyword.result(timeout_s=30) == {"note": "é" * 40, **DOC}
        assert await large.result(timeout_s=30) == big
    done = await client.get(keyword.id)
    assert done.args == [] and done.kwargs == {"value": {"note": "é" * 40, **DOC}}


async def test_a_key_stored_by_its_full_name_still_dedupes(client: QueueClient) -> None:
    """An idempotency key set before the digest (named by the key itself) returns its job for
    as long as it lives, and `enqueue_replacing` can take it over."""
    await client.redis.set(client.keys.idempotency_by_key(KEY), "older-job", ex=3600)
    again = await client.enqueue(qt.echo, 1, _options=JobOptions(idempotency_key=KEY))
    assert not again.created and again.id == "older-job"
    taken = await client.enqueue_replacing("older-job", qt.echo, 2,
                                           _options=JobOptions(idempotency_key=KEY))  # fmt: skip
    assert taken.created and taken.id != "older-job"
    after = await client.enqueue(qt.echo, 3, _options=JobOptions(idempotency_key=KEY))
    assert not after.created and after.id == taken.id
