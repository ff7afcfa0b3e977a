"""Waiting for one replica after the writes that must survive a failover.

Redis replicates asynchronously: a write a master acknowledged and then lost with it (killed
before its replica received the write) is gone after Sentinel or Cluster promotes the
replica. `WAIT numreplicas timeout` blocks the calling connection until that many replicas
acknowledged every write this connection made before it, or the timeout passed, and returns
how many did (https://redis.io/docs/latest/commands/wait/). So the write and its WAIT go in
one pipeline, on one connection; on a Cluster, to the node owning the keys' slot. Without
replicas there is nothing to wait for, and nothing is sent.

What WAIT does not give: a write whose WAIT timed out (the replica lagged more than the
timeout) is acknowledged anyway and logged, and can still be lost if the master dies next.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

log = logging.getLogger("pipeline.redis")

WAIT_TIMEOUT_MS = 100  # per acknowledged write; a replica on the same network answers in <1 ms
PROBE_EVERY_S = 5.0  # how long a replica count is trusted before INFO is asked again


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

    async def script(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            if not await self.replicas(keys[0]):
                return await script(keys=keys, args=args)
        except RedisError:
            self.forget()
            raise
        for attempt in (1, 2):
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    await script(keys=keys, args=args, client=pipe)
                    pipe.execute_command("WAIT", 1, self.timeout_ms, **self._node(keys[0]))
                    reply, acked = await pipe.execute()
            except NoScriptError:
                # A Cluster pipeline does not load scripts first (a plain one does); the
                # script did not run, so load it and send the pair again.
                if attempt == 2:
                    raise
                await self.redis.script_load(script.script)
                continue
            except RedisError:
                self.forget()
                raise
            self._acked(int(acked))
            return reply
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
        self._acked(int(acked))

    def _acked(self, acked: int) -> None:
        if acked >= 1:
            return
        self.unacked += 1
        self.forget()  # the replica may be gone: look again before the next write
        if time.monotonic() - self._warned_at > 10:
            self._warned_at = time.monotonic()
            log.warning(
                "no replica acknowledged a write within %d ms (%d so far); it is kept, but a "
                "failover right now could lose it",
                self.timeout_ms,
                self.unacked,
            )
