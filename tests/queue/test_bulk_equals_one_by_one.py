"""enqueue_many (enqueue_many.lua, many jobs per script call) leaves Redis exactly as the same
calls enqueued one by one (enqueue.lua): the same jobs, queues, schedule, hand-offs to idle
workers, events, idempotency keys and counters; on a real Redis, under two key prefixes."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline.queue import JobOptions, QueueClient
from pipeline.queue.handoff import REGISTRATION_MS
from pipeline.queue.record import idempotency_digest
from pipeline.queue.registry import claim_definitions
from pipeline.queue.task import Call
from pipeline.redis.keys import Keys
from tests.conftest import _drop_prefix
from tests.queue.conftest import worker
from tests.support import queue_tasks as qt
from tests.support.waiting import eventually

AT = datetime(2100, 1, 1, tzinfo=UTC)  # a start far away: stored as given
AT_MS = str(int(AT.timestamp() * 1000))
KEYS = ("dup", "old", "fresh")


def _calls() -> list[Call]:
    def echo(value: Any, **options: Any) -> Call:
        return Call("t.echo", [value], {}, JobOptions(**options), task=qt.echo)

    long_kwargs = Call("t.echo", [], {"value": "é" * 40}, JobOptions(idempotency_key="fresh"))
    return [
        echo(0),  # to idle ghost-a: nothing ahead of it in `default`
        echo(1, idempotency_key="dup"),  # to ghost-b (ghost-c serves `other` only)
        echo(2),  # no idle worker for `default` left: queued
        echo(3, idempotency_key="dup"),  # the key's job from earlier in the call
        echo(4, idempotency_key="old"),  # a key enqueued before the call
        echo(5, delay_s=30),  # scheduled, on the Redis clock
        echo(6, at=AT),  # scheduled at a given time
        echo(7, priority=9),  # queued ahead of the others
        echo(8, queue="other"),  # its queue is empty: to ghost-c
        echo(9, queue="other"),  # queued behind it
        long_kwargs,  # stored in pieces
        echo("x" * 300, batch="b1", hints={"model": "m"}, expected_duration_s=5),
        echo(12, job_id="fixed-1"),
        echo(13, job_id="fixed-1"),  # the id given earlier in the call: that job
        echo(14, job_id="pre"),  # an id enqueued before the call: that job
        echo(15),
    ]


async def _before(client: QueueClient) -> dict[str, str]:
    """What exists before the calls: two jobs (in a queue of their own, so nothing is ahead of
    the calls' first jobs) and three idle workers (and one that died idle)."""
    k = client.keys
    parked = JobOptions(queue="parked")
    old = await client.enqueue(qt.echo, "old", _options=replace(parked, idempotency_key="old"))
    pre = await client.enqueue(qt.echo, "pre", _options=replace(parked, job_id="pre"))
    defs = json.loads(claim_definitions([qt.echo]))
    for name, queues, standing_ms in (("ghost-dead", ["default"], -1000),
                                      ("ghost-a", ["default"], REGISTRATION_MS),
                                      ("ghost-b", ["default"], REGISTRATION_MS),
                                      ("ghost-c", ["other"], REGISTRATION_MS)):  # fmt: skip
        info = json.dumps({"wake": k.worker_wake(name), "queues": queues,
                           "min_lease_ms": 2000, "defs": defs})  # fmt: skip
        await client.scripts.idle(keys=[k.idle, k.idle_workers], args=[name, standing_ms, info])
    return {old.id: "old", pre.id: "pre"}


def _record(h: dict[str, str], names: dict[str, str]) -> dict[str, Any]:
    """A job's hash with ids named and clock readings relative to its creation."""
    h = dict(h)
    h["id"] = names[h["id"]]
    created = int(h.pop("created_ms"))
    assert int(h.pop("enqueued_ms")) == created
    for field in ("run_at_ms", "started_ms", "lease_deadline_ms"):
        if field in h and h[field] != AT_MS:
            h[field] = int(h[field]) - created
    if "token" in h:
        h["token"] = h["token"].split("-")[0]  # the fence number; the nonce is random
    return h


async def _snapshot(client: QueueClient, names: dict[str, str]) -> dict[str, Any]:
    """Everything the enqueues wrote under `client`'s prefix, job ids named by `names`."""
    r, k = client.redis, client.keys

    def name(job_id: str) -> str:
        return names[job_id]

    out: dict[str, Any] = {
        "jobs": {names[i]: _record(await r.hgetall(k.job(i)), names) for i in names},
        "events": [{**f, "job": name(f["job"])} for _, f in await r.xrange(k.events)],
        "delayed": [name(m) for m in await r.zrange(k.delayed, 0, -1)],
        "queues": sorted(await r.smembers(k.queues)),
        "seq": await r.get(k.seq),
        "fence": await r.get(k.fence),
        "idle": await r.zrange(k.idle, 0, -1),
        "idle_workers": sorted(await r.hkeys(k.idle_workers)),
    }
    for key in KEYS:
        out[f"idempotency {key}"] = names[await r.get(k.idempotency(idempotency_digest(key)))]
    for queue in ("default", "other", "parked"):
        members = await r.zrange(k.queue(queue), 0, -1, withscores=True)
        out[f"queue {queue}"] = [(name(m), score) for m, score in members]
        out[f"wake {queue}"] = [name(m) for m in await r.lrange(k.wake(queue), 0, -1)]
    for ghost in ("ghost-a", "ghost-b", "ghost-c", "ghost-dead"):
        handed = [json.loads(v) for v in await r.lrange(k.worker_wake(ghost), 0, -1)]
        out[f"handed to {ghost}"] = [_record(h, names) for h in handed]
    return out


async def _enqueued(client: QueueClient, bulk: bool) -> tuple[list[Any], dict[str, Any]]:
    names = await _before(client)
    calls = _calls()
    if bulk:
        handles = await client.enqueue_many(calls)
    else:
        handles = [await client.enqueue(call) for call in calls]
    names |= {h.id: f"j{i}" for i, h in enumerate(handles) if h.created}
    return [(names[h.id], h.created) for h in handles], await _snapshot(client, names)


@pytest.mark.parametrize("script_jobs", [200, 3])
async def test_bulk_enqueue_leaves_what_one_by_one_enqueues_leave(
    client: QueueClient, monkeypatch: pytest.MonkeyPatch, script_jobs: int
) -> None:
    """With 3 jobs per script call, the calls' jobs span six script calls in one pipeline."""
    monkeypatch.setattr("pipeline.queue.client.SCRIPT_JOBS", script_jobs)
    bulk_client = QueueClient(client.redis, Keys(client.keys.prefix + "-bulk"), client.settings)
    try:
        one_by_one = await _enqueued(client, bulk=False)
        bulk = await _enqueued(bulk_client, bulk=True)
    finally:
        await _drop_prefix(client.redis, bulk_client.keys.prefix)
    handles, state = bulk
    assert handles == one_by_one[0]
    assert state == one_by_one[1]
    # what the calls were meant to exercise did happen
    assert [h for h in handles if not h[1]] == [("j1", False), ("old", False),
                                                ("j12", False), ("pre", False)]  # fmt: skip
    assert [r["id"] for r in state["handed to ghost-a"]] == ["j0"]
    assert [r["id"] for r in state["handed to ghost-b"]] == ["j1"]
    assert [r["id"] for r in state["handed to ghost-c"]] == ["j8"]
    assert state["handed to ghost-dead"] == [] and state["idle"] == []
    assert state["jobs"]["j0"]["state"] == "active" and state["jobs"]["j0"]["worker"] == "ghost-a"
    assert state["delayed"] == ["j5", "j6"] and state["jobs"]["j5"]["run_at_ms"] == 30_000
    assert state["jobs"]["j6"]["run_at_ms"] == AT_MS
    assert [m for m, _ in state["queue default"]] == ["j7", "j2", "j10", "j11", "j12", "j15"]
    assert state["queue other"] == [("j9", state["queue other"][0][1])]
    assert state["jobs"]["j10"]["kwargs.1"] and state["jobs"]["j11"]["args.1"]
    assert state["jobs"]["j11"]["hints"] == '{"model":"m"}'
    assert [e["state"] for e in state["events"] if e["job"] == "j0"] == ["queued", "active"]


async def test_a_bulk_call_hands_its_first_job_to_an_idle_worker(
    client: QueueClient, redis_url: str
) -> None:
    """One job per registration: the first goes to the idle worker from inside the script
    call, the others wait in the queue for its claims. (A worker renews its registration
    every second, unregistered for a moment: a call landing then has nobody to hand to, so
    the call is made again, a few times at most.)"""
    async with worker(redis_url, client, concurrency=2) as w:
        assert w.handoff is not None
        for _ in range(5):
            await eventually(lambda: client.redis.zscore(client.keys.idle, w.id),
                             what="registered")  # fmt: skip
            handles = await client.enqueue_many([qt.echo.call(n) for n in range(5)])
            assert [await h.result(timeout_s=30) for h in handles] == list(range(5))
            if w.handoff.handed:
                break
        assert w.handoff.handed == 1
        first = await handles[0].info()
        assert first.worker == w.id and first.attempt == 1
