"""Coalescing the script calls of one event-loop turn into one pipeline: one round trip.

A worker running many short jobs settles several of them in the same turn of its event
loop; sent one by one, each finish.lua is a round trip of its own (a connection taken from
the pool, a send, a read). Here each call queues itself and the first one schedules a flush
for the end of the turn, which sends every queued call in one non-transactional pipeline.
Each call is still its own script, with its own KEYS, ARGV and fencing token: batching
changes how calls travel, never what they do. A connection error fails every call of the
batch with that error (each caller's own retry loop handles it: the scripts are safe to send
again); an error one script raised fails that call only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

_Call = tuple[AsyncScript, Sequence[str], Sequence[Any], "asyncio.Future[Any]"]


class ScriptBatcher:
    """`await batcher.call(script, keys, args)` returns the script's reply, as
    `script(keys=keys, args=args)` would, but shares a round trip with the other calls made in
    the same loop turn. Raises what the script raised, or the batch's RedisError.

    For a plain (non-Cluster) client. Calls go as bare EVALSHA: a pipeline that knows its
    scripts asks SCRIPT EXISTS first, a second round trip per batch; instead a call the
    server answers NOSCRIPT (a restarted Redis) is sent again once its script is loaded."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._queued: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()
        self.batches = 0  # pipelines sent (for the profile: calls / batches = batch size)
        self.calls = 0

    async def call(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush)
        self._queued.append((script, keys, args, future))
        return await future

    def _flush(self) -> None:
        batch, self._queued = self._queued, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Call]) -> None:
        self.batches += 1
        self.calls += len(batch)
        try:
            replies = await self._pipeline(batch)
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:  # nothing ran for these: load their scripts, send them again
                for script in {id(batch[i][0]): batch[i][0] for i in missing}.values():
                    await self.redis.script_load(script.script)
                again = await self._pipeline([batch[i] for i in missing])
                for i, reply in zip(missing, again, strict=True):
                    replies[i] = reply
        except asyncio.CancelledError:
            for *_, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # the connection failed: every call of the batch did
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller was cancelled meanwhile
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _pipeline(self, batch: list[_Call]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for script, keys, args, _ in batch:
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            return list(await pipe.execute(raise_on_error=False))
