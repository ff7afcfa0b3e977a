"""The task registry in Redis: the options of every task, published by the workers that import it.

Task options are known where the task lives. A worker publishes the options of the tasks it
imported when it starts (one hash, task name -> JSON). A process that enqueues by name without
the import (the CLI, the HTTP API, a producer service) reads them to place the job in the
task's queue at its priority, and fails loudly when no worker ever published the name. How a
job runs (lease, timeout, attempts, retry delays) is not copied into the job: the worker that
claims it resolves those from its own definition (claim.lua), so a job always runs with the
options of the code that runs it. Celery's `send_task` drift (celery/celery#8542) is the
failure this avoids.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from pipeline.errors import UnknownTask
from pipeline.queue.job import parse_priority
from pipeline.queue.task import DEFAULT_QUEUE, REGISTRY, Call, Task
from pipeline.redis.connection import text
from pipeline.redis.keys import Keys

log = logging.getLogger("pipeline.registry")

CACHE_S = 5.0  # how long a producer trusts a published definition before reading it again
MISS_RETRY_S = 0.2  # a name not (yet) published is looked up again after this long


async def publish(redis: Redis, keys: Keys, tasks: Sequence[Task], worker_id: str) -> list[str]:
    """Publish `tasks`' options (Task.options() plus `worker` and `published_ms`); return one
    warning per task whose published version came from other code on another worker."""
    if not tasks:
        return []
    warnings, _ = await _publish_and_read(redis, keys, tasks, worker_id)
    return warnings


async def _publish_and_read(
    redis: Redis, keys: Keys, tasks: Sequence[Task], worker_id: str
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """`publish`, and every definition published once ours are in (as `published`), in one
    round trip: the HMGET runs before the HSET on the server, so it reads what was there."""
    names = [t.name for t in tasks]
    now_ms = int(time.time() * 1000)
    mine = {t.name: t.options() for t in tasks}
    async with redis.pipeline(transaction=False) as pipe:
        if tasks:
            pipe.hmget(keys.task_registry, names)
            pipe.hset(
                keys.task_registry,
                mapping={
                    name: json.dumps({**opts, "worker": worker_id, "published_ms": now_ms})
                    for name, opts in mine.items()
                },
            )
        pipe.hgetall(keys.task_registry)
        replies = await pipe.execute()
    before = replies[0] if tasks else []
    definitions = {text(k): json.loads(text(v)) for k, v in replies[-1].items()}
    warnings = []
    for name, raw in zip(names, before, strict=True):
        old = json.loads(text(raw)) if raw else None
        if old and old.get("version") != mine[name]["version"] and old.get("worker") != worker_id:
            warnings.append(
                f"task {name!r}: this worker's definition (version {mine[name]['version']}) "
                f"differs from the one worker {old.get('worker')} published (version "
                f"{old.get('version')}); each job runs with the options of the worker that "
                "claims it, so keep every worker on the same code"
            )
    return warnings, definitions


async def published(redis: Redis, keys: Keys) -> dict[str, dict[str, Any]]:
    """Every published definition: task name -> its options (see `publish`)."""
    raw = await redis.hgetall(keys.task_registry)
    return {text(k): json.loads(text(v)) for k, v in raw.items()}


def unused_queues(queues: Iterable[str], definitions: dict[str, dict[str, Any]]) -> list[str]:
    """The queues among `queues` that no published task is declared on."""
    used = {str(d.get("queue", DEFAULT_QUEUE)) for d in definitions.values()}
    return [q for q in queues if q not in used]


def claim_definitions(tasks: Iterable[Task]) -> str:
    """The ARGV claim.lua resolves run options from: JSON {task name: {expected_s, timeout_s,
    max_attempts, retry_delays_s (a JSON text)}} for the tasks this worker imported."""
    return json.dumps(
        {
            t.name: {
                "expected_s": t.expected_duration_s,
                "timeout_s": t.timeout_s,
                "max_attempts": t.max_attempts,
                "retry_delays_s": json.dumps(list(t.retry_delays_s)),
            }
            for t in tasks
        },
        separators=(",", ":"),
    )


@dataclass(frozen=True)
class Placement:
    """Where an enqueue puts a job: its queue and priority (0-9), and where they came from
    (`local` definition, `published` one, or the caller's `explicit` options)."""

    queue: str
    priority: int
    source: str


class Placer:
    """Resolves a Call's queue and priority: the caller's explicit options first, then the
    task as imported in this process, then as published by a worker. A name known to neither
    raises UnknownTask unless the caller names the queue itself (JobOptions(queue=...)).
    Published definitions are cached for CACHE_S seconds per process."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis, self.keys = redis, keys
        self._cache: dict[str, dict[str, Any]] = {}
        self._cached_at = -1e9

    async def definition(self, name: str) -> dict[str, Any] | None:
        """The published options of task `name`, or None when no worker published it."""
        age = time.monotonic() - self._cached_at
        if age > CACHE_S or (name not in self._cache and age > MISS_RETRY_S):
            self._cache = await published(self.redis, self.keys)
            self._cached_at = time.monotonic()
        return self._cache.get(name)

    async def place(self, call: Call) -> Placement:
        o = call.options
        local = call.task or REGISTRY.get(call.task_name)
        declared: dict[str, Any] | None
        if local is not None:
            declared, source = {"queue": local.queue, "priority": local.priority}, "local"
        else:
            declared, source = await self.definition(call.task_name), "published"
        if declared is None:
            if o.queue is None:
                raise UnknownTask(
                    f"unknown task {call.task_name}: no worker has registered it (start a "
                    "worker with --import <the module that defines it>, or import that module "
                    "here); to enqueue it anyway, name its queue: JobOptions(queue=...)"
                )
            declared, source = {}, "explicit"
        queue = o.queue or str(declared.get("queue") or DEFAULT_QUEUE)
        priority = o.priority if o.priority is not None else declared.get("priority", 5)
        return Placement(queue, parse_priority(priority), source)


async def announce(redis: Redis, keys: Keys, worker_id: str, queues: Sequence[str]) -> None:
    """At worker start: publish the tasks this process imported, and warn about a published
    definition from other code, and about each served queue that no published task uses
    (jobs reach such a queue only when enqueued with an explicit queue). One round trip."""
    tasks = list(REGISTRY.values())
    warnings, definitions = await _publish_and_read(redis, keys, tasks, worker_id)
    for warning in warnings:
        log.warning(warning)
    for queue in unused_queues(queues, definitions):
        used = sorted({str(d.get("queue", DEFAULT_QUEUE)) for d in definitions.values()})
        log.warning(
            "this worker serves queue %r, but no registered task is declared on it (tasks use: "
            "%s); jobs land there only when enqueued with that queue named explicitly "
            "(`pipeline submit --queue %s`, JobOptions(queue=%r)). A priority is not a queue: "
            "`--priority high` orders jobs within their queue",
            queue,
            ", ".join(used) or "none",
            queue,
            queue,
        )
