"""Waiting for one replica after the writes that must survive a failover.

Redis replicates asynchronously: a write a master acknowledged and then lost with it (killed
before its replica received the write) is gone after Sentinel or Cluster promotes the
replica. `WAIT numreplicas timeout` blocks the calling connection until that many replicas
acknowledged every write this connection made before it, or the timeout passed, and returns
how many did (https://redis.io/docs/latest/commands/wait/). So the write and its WAIT go in
one pipeline, on one connection; on a Cluster, to the node owning the keys' slot. Without
replicas there is nothing to wait for, and nothing is sent.

A write no replica acknowledged in time is sent again (the queue's scripts are safe to
replay) with a longer WAIT, until one does: if the master died meanwhile, the replay lands on
the promoted replica. What is still not covered: a write whose replicas stayed silent for
CONFIRM_S is kept on the master only (logged), and `sync()` (a chord's transaction) waits but
cannot replay.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

log = logging.getLogger("pipeline.redis")

WAIT_TIMEOUT_MS = 100  # per acknowledged write; a replica on the same network answers in <1 ms
PROBE_EVERY_S = 5.0  # how long a replica count is trusted before INFO is asked again
CONFIRM_S = 5.0  # how long an unacknowledged write is sent again before it is let go
_UNSET = object()


def pipelined(pipe: Any, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> None:
    """Queue `script` in a pipeline or transaction of a plain or a Cluster client. A Cluster
    pipeline refuses redis-py's `evalsha` method but routes a raw EVALSHA by its keys; it does
    not load scripts first either, so with a Cluster the caller loads the script before
    (`script_load` goes to every primary). A plain pipeline loads it itself."""
    if isinstance(pipe, Pipeline):
        pipe.scripts.add(script)  # type: ignore[arg-type]  # an asyncio pipeline's are AsyncScripts
    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)


async def evalsha(redis: Redis, script: AsyncScript, keys: Sequence[str],
                  args: Sequence[Any]) -> Any:  # fmt: skip
    """`script(keys=keys, args=args)` without redis-py's Script wrapper (which copies its
    keys and arguments into a new tuple and imports on every call): EVALSHA, loading the
    script once when the server answers NOSCRIPT (a restarted Redis). Raises what the script
    raised, or RedisError."""
    send: Any = redis.execute_command
    try:
        return await send("EVALSHA", script.sha, len(keys), *keys, *args)
    except NoScriptError:
        await redis.script_load(script.script)
        return await send("EVALSHA", script.sha, len(keys), *keys, *args)


class ReplicaWait:
    """Runs a script, then WAIT 1 `timeout_ms` on the same connection, when the master of the
    script's keys has replicas (INFO replication, re-read every `probe_every_s`).

    `script(...)` returns the script's reply; RedisError propagates as from the script call.
    `unacked` counts writes whose WAIT saw no replica acknowledge in time.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        timeout_ms: int = WAIT_TIMEOUT_MS,
        probe_every_s: float = PROBE_EVERY_S,
    ) -> None:
        self.redis = redis
        self.timeout_ms = timeout_ms
        self.probe_every_s = probe_every_s
        self.unacked = 0
        self._replicas = 0
        self._probed_at = -1e9
        self._warned_at = -1e9

    def _node(self, key: str) -> dict[str, Any]:
        """`target_nodes` for a keyless command about `key`'s slot (Cluster only)."""
        if isinstance(self.redis, RedisCluster):
            return {"target_nodes": self.redis.get_node_from_key(key)}
        return {}

    async def replicas(self, key: str) -> int:
        """Replicas connected to the master that holds `key` (cached)."""
        if time.monotonic() - self._probed_at > self.probe_every_s:
            if isinstance(self.redis, RedisCluster):
                # a client learns the slots on its first command: before that, the slot's
                # node is unknown (SlotNotCoveredError), as for a one-shot client's enqueue
                await self.redis.initialize()
            info: Any = await self.redis.execute_command(  # type: ignore[no-untyped-call]
                "INFO", "replication", **self._node(key)
            )
            if isinstance(info, dict) and "connected_slaves" not in info and info:
                info = next(iter(info.values()))  # a Cluster answers per node
            self._replicas = int(info.get("connected_slaves", 0)) if isinstance(info, dict) else 0
            self._probed_at = time.monotonic()
        return self._replicas

    def forget(self) -> None:
        """Ask INFO again on the next write (after a connection error: a failover changes it)."""
        self._probed_at = -1e9

    async def script(
        self,
        script: AsyncScript,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        last_reply: bool = False,
    ) -> Any:
        """Run `script` (with replicas: then WAIT); return its first reply, or with
        `last_reply` the reply of its last sending (a claim: what the current master holds).

        The script must be safe to send again (the queue's enqueue, claim and finish are: a
        replay returns what the first call did): when no replica acknowledged in time, it is
        sent again with a longer WAIT until one does or CONFIRM_S passed, so after a failover
        the write lands on the new master too. RedisError propagates."""
        if not self._replicas and time.monotonic() - self._probed_at <= self.probe_every_s:
            # none, as INFO said a moment ago: straight out, without the loop (an enqueue's path)
            try:
                return await evalsha(self.redis, script, keys, args)
            except RedisError:
                self.forget()
                raise
        first: Any = _UNSET
        wait_ms = self.timeout_ms
        give_up = time.monotonic() + CONFIRM_S
        while True:
            try:
                if not await self.replicas(keys[0]):
                    reply = await evalsha(self.redis, script, keys, args)
                    return reply if first is _UNSET or last_reply else first
                reply, acked = await self._with_wait(script, keys, args, wait_ms)
            except RedisError:
                self.forget()
                raise
            first = reply if first is _UNSET else first
            if acked >= 1:
                return reply if last_reply else first
            self.forget()  # the replica may be gone, or the master: look again
            if time.monotonic() > give_up:
                self._unacked()
                return reply if last_reply else first
            wait_ms = min(2 * wait_ms, 1000)

    async def script_many(
        self, script: AsyncScript, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]
    ) -> list[Any]:
        """Run `script` once per (keys, args) in `calls`, all in one pipeline (one round trip;
        a second only for scripts a restarted server lacks), then with replicas WAIT as
        `script()` does, sending the whole batch again while none acknowledged: the script
        must be safe to send again. Returns the first sending's replies, in order. The keys
        of all calls must live on one node (a Cluster: one hash tag). Raises the first error
        a script raised (the calls before and after it ran) or RedisError from the pipeline."""
        if not calls:
            return []
        first: list[Any] | None = None
        wait_ms = self.timeout_ms
        give_up = time.monotonic() + CONFIRM_S
        key = calls[0][0][0]
        while True:
            try:
                waiting = bool(await self.replicas(key))
                replies, acked = await self._many(script, calls, wait_ms if waiting else None, key)
            except RedisError:
                self.forget()
                raise
            first = replies if first is None else first
            if not waiting or acked >= 1:
                return first
            self.forget()
            if time.monotonic() > give_up:
                self._unacked()
                return first
            wait_ms = min(2 * wait_ms, 1000)

    async def _many(
        self,
        script: AsyncScript,
        calls: Sequence[tuple[Sequence[str], Sequence[Any]]],
        wait_ms: int | None,
        key: str,
    ) -> tuple[list[Any], int]:
        """Bare EVALSHAs (a pipeline told its scripts asks SCRIPT EXISTS first, one more round
        trip); the calls answered NOSCRIPT did not run, and go again once it is loaded."""
        replies: list[Any] = [None] * len(calls)
        pending = list(range(len(calls)))
        acked = 0
        for attempt in (1, 2):
            async with self.redis.pipeline(transaction=False) as pipe:
                for i in pending:
                    keys, args = calls[i]
                    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                if wait_ms is not None:
                    pipe.execute_command("WAIT", 1, wait_ms, **self._node(key))
                out = await pipe.execute(raise_on_error=False)
            if wait_ms is not None:
                acked = out.pop() if isinstance(out[-1], int) else 0
            for i, reply in zip(pending, out, strict=True):
                replies[i] = reply
            pending = [i for i in pending if isinstance(replies[i], NoScriptError)]
            if not pending:
                break
            if attempt == 1:
                await self.redis.script_load(script.script)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies, int(acked)

    async def _with_wait(
        self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any], wait_ms: int
    ) -> tuple[Any, int]:
        for attempt in (1, 2):
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipelined(pipe, script, keys, args)
                    pipe.execute_command("WAIT", 1, wait_ms, **self._node(keys[0]))
                    reply, acked = await pipe.execute()
                    return reply, int(acked)
            except NoScriptError:
                # A Cluster pipeline does not load scripts first (a plain one does); the
                # script did not run, so load it and send the pair again.
                if attempt == 2:
                    raise
                await self.redis.script_load(script.script)
        raise AssertionError("unreachable")

    async def sync(self, key: str) -> None:
        """WAIT for the writes other connections made before now (a transaction's): a tiny
        write to `key` first puts this connection's replication offset past them."""
        try:
            if not await self.replicas(key):
                return
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.incr(key)
                pipe.execute_command("WAIT", 1, self.timeout_ms, **self._node(key))
                _, acked = await pipe.execute()
        except RedisError:
            self.forget()
            raise
        if int(acked) < 1:
            self._unacked()

    def _unacked(self) -> None:
        self.unacked += 1
        self.forget()  # the replica may be gone: look again before the next write
        if time.monotonic() - self._warned_at > 10:
            self._warned_at = time.monotonic()
            log.warning(
                "no replica acknowledged a write in time (%d so far); it is kept on the master "
                "only, where a failover now would lose it",
                self.unacked,
            )
