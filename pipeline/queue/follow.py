"""Following jobs: the event stream every state change writes, and waiting for one job.

A client follows a batch live by reading one Redis stream instead of polling every job, and
`wait` says so when the job it waits for sits in a queue that no live worker serves, rather
than waiting in silence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from pipeline.errors import JobTimeout
from pipeline.queue.job import Job, State
from pipeline.redis.connection import hash_reply, text

if TYPE_CHECKING:
    from pipeline.queue.client import QueueClient

log = logging.getLogger("pipeline.client")

WARN_UNSERVED_S = 10.0  # how often a waiting client checks that some worker serves the queue
_STATES = frozenset(s.value for s in State)


@dataclass(frozen=True)
class Event:
    """One entry of the event stream: a job's new state (or `progress`, `lease_expired`)."""

    stream_id: str
    job: str
    state: str
    task: str
    queue: str
    batch: str
    attempt: int
    fields: dict[str, str]


async def last_event_id(client: QueueClient) -> str:
    last = cast(list[Any], await client.redis.xrevrange(client.keys.events, count=1))
    return text(last[0][0]) if last else "0-0"


async def events(
    client: QueueClient,
    *,
    since: str | None = None,
    batch: str | None = None,
    block_ms: int = 1000,
    until: float | None = None,
) -> AsyncIterator[Event]:
    """Events after `since` (default: from now), optionally of one batch, until the
    time.monotonic() deadline `until` (None: for ever)."""
    cursor = since or await last_event_id(client)
    while until is None or time.monotonic() < until:
        block = (
            block_ms
            if until is None
            else max(1, min(block_ms, int((until - time.monotonic()) * 1000)))
        )
        reply = await client.redis.xread({client.keys.events: cursor}, block=block, count=500)
        for _, entries in cast(list[Any], reply or []):
            for stream_id, raw_fields in entries:
                f = hash_reply(raw_fields)
                cursor = stream_id
                if batch is not None and f.get("batch") != batch:
                    continue
                yield Event(
                    stream_id,
                    f.get("job", ""),
                    f.get("state", ""),
                    f.get("task", ""),
                    f.get("queue", ""),
                    f.get("batch", ""),
                    int(f.get("attempt") or 0),
                    f,
                )


async def wait(client: QueueClient, job_id: str, timeout_s: float | None = None) -> Job:
    """Wait until the job is terminal, following the event stream (no polling); JobTimeout
    past `timeout_s`. While the job waits in a queue that no live worker serves, says so in a
    warning (every WARN_UNSERVED_S) and in the JobTimeout message."""
    until = None if timeout_s is None else time.monotonic() + timeout_s
    cursor = await last_event_id(client)
    job = await client.get(job_id)
    unserved = ""
    while not job.done:
        if job.state in (State.QUEUED, State.SCHEDULED):
            unserved = await unserved_reason(client, job.queue)
            if unserved:
                log.warning("job %s waits: %s", job_id, unserved)
        check_at = time.monotonic() + WARN_UNSERVED_S
        window = check_at if until is None else min(until, check_at)
        async for event in events(client, since=cursor, until=window):
            cursor = event.stream_id
            if event.job == job_id and event.state in _STATES:
                job = await client.get(job_id)
                if job.done:
                    return job
        job = await client.get(job_id)
        if not job.done and until is not None and time.monotonic() >= until:
            hint = f"; {unserved}" if unserved else ""
            raise JobTimeout(f"job {job_id} still {job.state} after {timeout_s}s{hint}")
    return job


async def unserved_reason(client: QueueClient, queue: str) -> str:
    """Why a job in `queue` cannot start: no live worker serves it ('' when one does)."""
    workers = await client.workers()
    if any(queue in w["queues"] for w in workers):
        return ""
    served = sorted({q for w in workers for q in w["queues"]})
    return (
        f"no live worker serves queue {queue!r} (live workers serve: "
        f"{', '.join(served) or 'none'}); start one with "
        f"`pipeline worker --queue {queue} --import <module with the task>`"
    )
