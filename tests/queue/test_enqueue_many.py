"""Bulk enqueue (QueueClient.enqueue_many) and batched settlements (ScriptBatcher), on a real
Redis: the same idempotency semantics as one-by-one enqueue, in one pipeline per chunk."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from redis.exceptions import ResponseError

from pipeline.errors import UnknownTask
from pipeline.queue import JobOptions, QueueClient
from pipeline.queue.batcher import ScriptBatcher
from pipeline.queue.enqueue_args import SCRIPT_JOBS, new_job_ids
from pipeline.queue.record import idempotency_digest
from pipeline.queue.task import Call
from tests.queue.conftest import worker
from tests.support import queue_tasks as qt


def _count_pipelines(client: QueueClient) -> list[int]:
    """Count the pipelines `client` opens (each one is one round trip here)."""
    opened = [0]
    real = client.redis.pipeline

    def counted(*args: Any, **kwargs: Any) -> Any:
        opened[0] += 1
        return real(*args, **kwargs)

    client.redis.pipeline = counted  # type: ignore[method-assign]
    return opened


async def test_a_thousand_jobs_in_one_pipeline_with_keys_deduplicated(
    client: QueueClient,
) -> None:
    """1,000 calls over 400 idempotency keys, 100 of them used before by `enqueue`: 300 new
    jobs, every call with a key answered by that key's one job, in one pipeline (once the
    server has the script: a first use adds a round trip to load it)."""
    before = {}
    for n in range(100):
        handle = await client.enqueue(qt.echo, n, _options=JobOptions(idempotency_key=f"k{n}"))
        before[f"k{n}"] = handle.id
    calls = [Call("t.echo", [n], {}, JobOptions(idempotency_key=f"k{n % 400}"), task=qt.echo)
             for n in range(1000)]  # fmt: skip
    await client.redis.script_load(client.scripts.enqueue_many.script)
    opened = _count_pipelines(client)
    sent: list[int] = []  # script calls per pipeline
    real = client.replicas.script_many

    async def counted(script: Any, scripts: Any) -> Any:
        sent.append(len(scripts))
        return await real(script, scripts)

    client.replicas.script_many = counted  # type: ignore[method-assign]
    handles = await client.enqueue_many(calls)
    assert opened[0] == 1 and sent == [1000 // SCRIPT_JOBS]  # each holds Redis briefly
    assert len(handles) == 1000
    by_key: dict[str, set[str]] = {}
    for n, handle in enumerate(handles):
        by_key.setdefault(f"k{n % 400}", set()).add(handle.id)
    assert all(len(ids) == 1 for ids in by_key.values())
    assert all(by_key[k] == {job_id} for k, job_id in before.items())
    created = [h for h in handles if h.created]
    assert len(created) == 300
    assert [h.id for h in handles[100:400]] == [h.id for h in created]  # first use creates
    assert await client.redis.zcard(client.keys.queue("default")) == 400
    first = await client.get(handles[123].id)
    assert first.args == [123] and first.idempotency_key == idempotency_digest("k123")


def test_bulk_job_ids_are_random_uuids() -> None:
    ids = new_job_ids(1000)
    assert len(set(ids)) == 1000
    for job_id in ids:
        parsed = uuid.UUID(hex=job_id)
        assert parsed.hex == job_id and parsed.version == 4 and parsed.variant == uuid.RFC_4122


async def test_bulk_jobs_run_and_unknown_task_sends_nothing(
    client: QueueClient, redis_url: str
) -> None:
    with pytest.raises(UnknownTask):
        await client.enqueue_many([Call("t.echo", [1], {}, JobOptions(), task=qt.echo),
                                   Call("no.such.task", [], {}, JobOptions())])  # fmt: skip
    assert await client.redis.zcard(client.keys.queue("default")) == 0
    handles = await client.enqueue_many(
        [Call("t.echo", [n], {}, JobOptions(), task=qt.echo) for n in range(30)], chunk=7
    )
    assert await client.enqueue_many([]) == []
    async with worker(redis_url, client, concurrency=8):
        results = [await h.result(timeout_s=30) for h in handles]
    assert results == list(range(30))


async def test_batched_script_calls_share_a_pipeline_and_fail_alone(
    client: QueueClient,
) -> None:
    """Calls made in one loop turn go in one pipeline; a script's error fails only its call;
    a script the server does not know yet (NOSCRIPT) is loaded and sent again."""
    incr = client.redis.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    boom = client.redis.register_script(
        f"-- {client.keys.prefix}\nreturn redis.error_reply('boom')"
    )
    batcher = ScriptBatcher(client.redis)
    key = client.keys.replication_probe  # a counter under the test's prefix
    replies = await asyncio.gather(
        *(batcher.call(incr, [key], [1]) for _ in range(20)),
        batcher.call(boom, [key], []),
        return_exceptions=True,
    )
    assert sorted(replies[:20]) == list(range(1, 21))  # type: ignore[type-var]
    assert isinstance(replies[20], ResponseError) and "boom" in str(replies[20])
    assert (batcher.batches, batcher.calls) == (1, 21)
