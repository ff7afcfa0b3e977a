"""The queue's Lua scripts (lua/*.lua, one atomic script per state change), registered through
the shared loader (pipeline/redis/scripts.py), and the KEYS lists several of them share.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from pipeline.queue.job import Job
from pipeline.redis.keys import Keys
from pipeline.redis.scripts import register

LUA_DIR = Path(__file__).parent / "lua"


class Scripts:
    """The queue scripts, registered on one Redis client."""

    NAMES = ("enqueue", "enqueue_many", "claim", "renew", "finish", "expire", "promote",
             "cancel", "requeue", "idle")  # fmt: skip

    def __init__(self, redis: Redis) -> None:
        for name, script in register(redis, LUA_DIR, *self.NAMES).items():
            setattr(self, name, script)

    enqueue: AsyncScript
    enqueue_many: AsyncScript
    claim: AsyncScript
    renew: AsyncScript
    finish: AsyncScript
    expire: AsyncScript
    promote: AsyncScript
    cancel: AsyncScript
    requeue: AsyncScript
    idle: AsyncScript


def group_keys(keys: Keys, job: Job) -> list[str]:
    """Chord keys for scripts that may finish a group member (placeholders outside a group)."""
    if not job.group or not job.callback_id:
        return [keys.unused] * 5
    cbq = job.callback_queue or "default"
    return [
        keys.group(job.group),
        keys.group_results(job.group),
        keys.job(job.callback_id),
        keys.queue(cbq),
        keys.wake(cbq),
    ]


def settle_keys(keys: Keys, job: Job) -> list[str]:
    """The KEYS of finish.lua and expire.lua for one job."""
    if not job.group or not job.callback_id:  # the common case: built once per queue
        return [keys.job(job.id), *_queue_settle_keys(keys, job.queue)]
    return [keys.job(job.id), *_queue_settle_keys(keys, job.queue)[:6], *group_keys(keys, job)]


@lru_cache(maxsize=256)
def _queue_settle_keys(keys: Keys, queue: str) -> tuple[str, ...]:
    """settle_keys after the job's own, for a job outside a group (Keys is frozen: hashable)."""
    return (keys.active, keys.events, keys.queue(queue), keys.delayed, keys.dead,
            keys.wake(queue), *[keys.unused] * 5)  # fmt: skip
