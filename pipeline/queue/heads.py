"""The first jobs of each queue, as a worker last saw them: read with the claim that changed
them, so a busy worker's next claim needs no read of its own.

A claim has two steps: read the heads of the queues (ZRANGE), then claim.lua on those ids.
Sent alone, each is a round trip. Here claim.lua goes out with a ZRANGE of every queue after
it, in one pipeline: the heads as they stand once this claim took its jobs. The next claim
uses them if they are at most `FRESH_S` old (a worker with free slots claims again within
moments), else reads again, as one would without this. Nothing is decided on them: claim.lua
still takes a job only while it is queued (ZREM), so heads another worker took meanwhile
cost a refused claim, never a double start. The window in which a newer job of a higher
priority can be passed over grows from one round trip to at most `FRESH_S`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

FRESH_S = 0.05  # how old a piggybacked read may be and still stand for a fresh one


class Heads:
    """`read(want)` -> one list of job ids per queue (the first `want` of each); `claim(...)`
    runs claim.lua and keeps the heads read with it. For a plain (non-Cluster) client with
    no replica to wait for; the worker takes its other path otherwise."""

    def __init__(self, redis: Redis, queue_keys: Sequence[str], peek: int) -> None:
        self.redis = redis
        self.peek = peek  # heads read per queue with each claim: the most `read` is asked for
        self.queue_keys = list(queue_keys)
        self._seen: list[list[str]] | None = None
        self._seen_at = 0.0
        self.reads_saved = 0  # for the profile: claims that needed no read of their own

    async def read(self, want: int) -> list[list[str]]:
        seen, self._seen = self._seen, None  # a piggybacked read serves one claim
        if seen is not None and time.monotonic() - self._seen_at <= FRESH_S:
            self.reads_saved += 1
            return [ids[:want] for ids in seen]
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self.queue_keys:
                pipe.zrange(key, 0, want - 1)
            return list(await pipe.execute())

    def forget(self) -> None:
        self._seen = None

    async def claim(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """claim.lua's reply, as `script(keys=keys, args=args)` would give it (a bare EVALSHA;
        sent again once loaded if a restarted Redis lacks it: nothing ran then). Raises what
        the script raised, or the pipeline's RedisError."""
        for attempt in (1, 2):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                for key in self.queue_keys:
                    pipe.zrange(key, 0, self.peek - 1)
                replies = await pipe.execute(raise_on_error=False)
            reply = replies[0]
            if isinstance(reply, NoScriptError) and attempt == 1:
                await self.redis.script_load(script.script)
                continue
            if isinstance(reply, Exception):
                self._seen = None
                raise reply
            if not any(isinstance(r, Exception) for r in replies[1:]):
                self._seen, self._seen_at = [list(r) for r in replies[1:]], time.monotonic()
            return reply
        raise AssertionError("unreachable")  # pragma: no cover
