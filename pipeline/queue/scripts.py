"""Loads the queue's Lua scripts from lua/*.lua, one atomic script per state change.

A script whose header says `-- uses: _lib` gets lua/_lib.lua prepended (Redis Lua has no
`require`). redis-py's `Script` sends EVALSHA and falls back to EVAL on NOSCRIPT, so a
restarted Redis with an empty script cache needs nothing from us.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from pipeline.queue.job import Job
from pipeline.queue.keys import Keys

_LUA_DIR = Path(__file__).parent / "lua"


@cache
def lua_source(name: str, lua_dir: Path = _LUA_DIR) -> str:
    text = (lua_dir / f"{name}.lua").read_text()
    if "-- uses: _lib" in text:
        text = (lua_dir / "_lib.lua").read_text() + "\n" + text
    return text


class Scripts:
    """The queue scripts, registered on one Redis client."""

    NAMES = ("enqueue", "claim", "renew", "finish", "expire", "promote", "cancel", "requeue")

    def __init__(self, redis: Redis) -> None:
        for name in self.NAMES:
            setattr(self, name, redis.register_script(lua_source(name)))

    enqueue: AsyncScript
    claim: AsyncScript
    renew: AsyncScript
    finish: AsyncScript
    expire: AsyncScript
    promote: AsyncScript
    cancel: AsyncScript
    requeue: AsyncScript


def group_keys(keys: Keys, job: Job) -> list[str]:
    """Chord keys for scripts that may finish a group member (placeholders outside a group)."""
    if not job.group or not job.callback_id:
        return [keys.custom("nogroup")] * 5
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
    return [
        keys.job(job.id),
        keys.active,
        keys.events,
        keys.queue(job.queue),
        keys.delayed,
        keys.dead,
        keys.wake(job.queue),
        *group_keys(keys, job),
    ]
