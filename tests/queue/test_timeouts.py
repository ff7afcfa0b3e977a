"""pipeline/queue/timeouts.py: one loop timer for every running job's timeout."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from pipeline.queue.client import QueueClient
from pipeline.queue.job import Job
from pipeline.queue.shutdown import Running
from pipeline.queue.timeouts import DUE_WITHIN_S, Timeouts
from tests.support.waiting import eventually


def _entry(job_id: str, body: asyncio.Future[Any]) -> Running:
    """A running job's entry with just what its timeout needs (its job and body)."""
    running = Running(Job.from_hash({"id": job_id}), cast(QueueClient, None), "worker")
    running.task = body
    return running


async def test_each_job_expires_at_its_own_deadline_and_an_ended_one_never() -> None:
    loop = asyncio.get_running_loop()
    expired: list[tuple[str, float]] = []
    timeouts = Timeouts(lambda r: expired.append((r.job.id, loop.time() - r.deadline)))
    idle = asyncio.create_task(asyncio.sleep(60))
    entries = {name: _entry(name, idle) for name in "abcd"}
    timeouts.add(entries["a"], 600)  # armed first, far off
    timeouts.add(entries["b"], 0.05)  # an earlier deadline re-arms the timer
    timeouts.add(entries["c"], 0.01)
    entries["c"].settling = True  # its body ended before its deadline
    timeouts.ended(entries["c"])
    timeouts.add(entries["d"], 0.1)

    async def both() -> bool:
        return len(expired) == 2

    await eventually(both, what="b and d expired")
    assert [name for name, _ in expired] == ["b", "d"]
    assert all(late >= -DUE_WITHIN_S for _, late in expired)  # never before the deadline
    timeouts.close()
    idle.cancel()


async def test_an_ended_job_leaves_at_once() -> None:
    """Only running jobs are held: an ended entry kept until it reached the top held its job,
    arguments and all (a review probe: 60 settled jobs of 1 MB arguments kept 60 MB)."""
    timeouts = Timeouts(lambda r: None)
    idle = asyncio.create_task(asyncio.sleep(60))
    live: list[Running] = []
    for i in range(2000):
        running = _entry(str(i), idle)
        timeouts.add(running, 600 - i % 7)  # deadlines out of start order
        live.append(running)
        if len(live) > 10:  # the oldest-but-one ends: never the heap's top first
            ended = live.pop(1)
            ended.settling = True
            timeouts.ended(ended)
        assert len(timeouts) == len(live)
        assert all(entry in live for entry in timeouts._heap)
    timeouts.close()
    idle.cancel()


async def test_a_halt_that_raises_does_not_lose_the_later_timeouts() -> None:
    expired: list[str] = []

    def expire(running: Running) -> None:
        if running.job.id == "a":
            raise RuntimeError("this halt failed")
        expired.append(running.job.id)

    timeouts = Timeouts(expire)
    idle = asyncio.create_task(asyncio.sleep(60))
    first, later = (_entry(name, idle) for name in "ab")
    timeouts.add(first, 0.01)
    timeouts.add(later, 0.05)

    async def later_expired() -> bool:
        return expired == ["b"]

    await eventually(later_expired, what="b expired after a's halt raised")
    timeouts.close()
    idle.cancel()
