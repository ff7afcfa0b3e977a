"""Hand-offs (pipeline/queue/handoff.py): a job enqueued while a worker idles is claimed for it
by enqueue.lua and starts without a claim of its own, under the same lease, fencing and
events; one job per registration; a job handed to a worker that died idle comes back."""

from __future__ import annotations

import json
import time

from pipeline.queue import JobOptions, QueueClient, State
from pipeline.queue.handoff import FIRST_LEASE_MS, REGISTRATION_MS
from pipeline.queue.registry import claim_definitions
from pipeline.redis.connection import text
from tests.queue.conftest import worker
from tests.queue.test_workers import _PausedModelGate
from tests.support import queue_tasks as qt
from tests.support.waiting import eventually


async def _states(client: QueueClient, job_id: str) -> list[str]:
    events = await client.redis.xrange(client.keys.events)
    return [text(f["state"]) for _, f in events if text(f["job"]) == job_id]


async def test_an_idle_worker_is_handed_a_new_job_and_renews_its_full_lease(
    client: QueueClient, redis_url: str
) -> None:
    async with worker(redis_url, client, concurrency=2) as w:
        assert w.handoff is not None
        await eventually(lambda: client.redis.zscore(client.keys.idle, w.id), what="registered")
        handle = await client.enqueue(
            qt.block, "go-handoff", _options=JobOptions(expected_duration_s=30)
        )
        await eventually(lambda: qt.count(client, "started", handle.id), what="job start")
        assert w.handoff.handed == 1
        info = await handle.info()
        assert info.state == State.ACTIVE and info.worker == w.id and info.token
        assert info.lease_ms == 60_000  # 2 x expected, from the worker's resolution

        async def renewed() -> bool:  # the short first lease is extended at the next tick
            deadline = (await handle.info()).lease_deadline_ms or 0
            return deadline - time.time() * 1000 > FIRST_LEASE_MS + 20_000

        await eventually(renewed, what="full lease")
        await qt.set_flag(client, "go-handoff")
        assert await handle.result(timeout_s=20) == w.id
    assert await _states(client, handle.id) == ["queued", "active", "complete"]
    assert await client.redis.zscore(client.keys.idle, w.id) is None  # left on stop


async def test_one_job_per_registration_and_a_dead_idle_worker_gives_its_job_back(
    client: QueueClient, redis_url: str
) -> None:
    """A worker registered as idle, then died: it is handed one job (the next waits in the
    queue), and that job comes back when its first lease runs out, to run elsewhere, its
    attempt not counted: it never left the dead worker's wake list, so it never started."""
    k = client.keys
    ghost = json.dumps({"wake": k.worker_wake("ghost"), "queues": ["default"],
                        "min_lease_ms": 2000,
                        "defs": json.loads(claim_definitions([qt.echo]))})  # fmt: skip
    await client.scripts.idle(keys=[k.idle, k.idle_workers], args=["ghost", REGISTRATION_MS, ghost])
    first = await client.enqueue(qt.echo, "first", _options=JobOptions(expected_duration_s=60))
    second = await client.enqueue(qt.echo, "second")
    info = await first.info()
    assert info.state == State.ACTIVE and info.worker == "ghost"
    assert info.lease_deadline_ms is not None and info.started_ms is not None
    assert info.lease_deadline_ms - info.started_ms == FIRST_LEASE_MS  # not its 120 s lease
    assert (await second.info()).state == State.QUEUED
    assert await client.redis.llen(k.worker_wake("ghost")) == 1
    async with worker(redis_url, client, concurrency=2):
        assert await second.result(timeout_s=20) == "second"
        assert await first.result(timeout_s=FIRST_LEASE_MS / 1000 + 30) == "first"
    # it never started (still on the ghost's wake list): no attempt counted, no lease expiry
    info = await first.info()
    assert info.attempt == 1 and info.lease_expiries == 0
    assert await client.redis.llen(k.worker_wake("ghost")) == 0


async def test_a_gated_worker_is_never_handed_a_job(client: QueueClient, redis_url: str) -> None:
    async with worker(redis_url, client, concurrency=1, gate=_PausedModelGate("m")) as w:
        assert w.handoff is None
        await eventually(client.workers, what="heartbeat")
        assert await client.redis.zcard(client.keys.idle) == 0
        assert await (await client.enqueue(qt.echo, 3)).result(timeout_s=20) == 3


async def test_the_handed_record_is_the_job_as_stored_and_the_events_name_it(
    client: QueueClient,
) -> None:
    """enqueue.lua builds the record it hands over from what it wrote rather than reading the
    hash back: it must equal the hash field for field (arguments in pieces, keyword
    arguments, hints, batch, explicit options, idempotency digest, the claim's fields), and
    the `queued` and `active` events carry the job's task, queue, batch and attempt."""
    k = client.keys
    ghost = json.dumps({"wake": k.worker_wake("ghost"), "queues": ["default"],
                        "min_lease_ms": 2000,
                        "defs": json.loads(claim_definitions([qt.block]))})  # fmt: skip
    await client.scripts.idle(keys=[k.idle, k.idle_workers], args=["ghost", REGISTRATION_MS, ghost])
    options = JobOptions(expected_duration_s=7, max_attempts=4, batch="b-1",
                         idempotency_key="same-record", hints={"model": "m"})  # fmt: skip
    handle = await client.enqueue(qt.block, "f" * 300, value={"k": [1, 2]}, _options=options)
    stored = {text(f): text(v) for f, v in (await client.redis.hgetall(k.job(handle.id))).items()}
    assert stored["state"] == "active" and stored["worker"] == "ghost"
    assert "args.1" in stored  # the long argument is in pieces, and handed so
    # whole numbers written as plain digits (never 1.7e+12 nor 600.0), the token count-nonce
    for name in ("score", "created_ms", "enqueued_ms", "started_ms", "lease_ms",
                 "lease_deadline_ms", "attempt"):  # fmt: skip
        assert stored[name].isdigit(), (name, stored[name])
    assert int(stored["score"]) // 10**12 == 4  # priority 5 (the default) ranks 9 - 5
    assert int(stored["lease_deadline_ms"]) - int(stored["started_ms"]) == FIRST_LEASE_MS
    assert stored["lease_ms"] == "14000" and stored["attempt"] == "1"
    count, nonce = stored["token"].split("-")
    assert count.isdigit() and len(nonce) == 8
    (raw,) = await client.redis.lrange(k.worker_wake("ghost"), 0, -1)
    assert json.loads(raw) == stored
    events = [{text(a): text(b) for a, b in f.items()} for _, f in
              await client.redis.xrange(k.events) if text(f["job"]) == handle.id]  # fmt: skip
    assert [(e["state"], e["task"], e["queue"], e["batch"], e["attempt"]) for e in events] == [
        ("queued", "t.block", "default", "b-1", "0"),
        ("active", "t.block", "default", "b-1", "1"),
    ]
    assert events[1]["worker"] == "ghost"
    await client.redis.delete(k.worker_wake("ghost"))


async def test_a_claimed_job_s_active_event_names_it(client: QueueClient, redis_url: str) -> None:
    """claim.lua (no idle worker registered when the job came) reads the task, queue and batch
    for its `active` event with the claim's own read of the job."""
    handle = await client.enqueue(qt.echo, 5, _options=JobOptions(batch="b-2"))
    assert (await handle.info()).state == State.QUEUED
    async with worker(redis_url, client, concurrency=1):
        assert await handle.result(timeout_s=20) == 5
    k = client.keys
    events = [{text(a): text(b) for a, b in f.items()} for _, f in
              await client.redis.xrange(k.events) if text(f["job"]) == handle.id]  # fmt: skip
    active = [e for e in events if e["state"] == "active"]
    assert [(e["task"], e["queue"], e["batch"], e["attempt"]) for e in active] == [
        ("t.echo", "default", "b-2", "1")]
