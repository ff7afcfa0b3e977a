"""The Redis list that holds ledger writes while the database is down.

Entries are JSON `{"op": ..., "payload": ...}` appended with RPUSH and drained from the head,
so they apply in the order they were made. Draining takes a lock so two flushers do not
replay the same entries side by side; if one dies mid-drain the entries it applied are
replayed again later, which the idempotent writes (pipeline/ledger/writes.py) make harmless.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from pipeline.redis.connection import text
from pipeline.redis.keys import Keys
from pipeline.redis.scripts import register

_LUA = Path(__file__).with_name("lua")



class LedgerBuffer:
    def __init__(self, redis: aioredis.Redis, keys: Keys, lock_ttl_ms: int = 60_000) -> None:
        self.redis = redis
        self.key = keys.ledger_buffer
        self.dead_key = keys.ledger_buffer_dead
        self.lock_key = keys.ledger_flush_lock
        self.lock_ttl_ms = lock_ttl_ms
        self._release = register(redis, _LUA, "release_lock")["release_lock"]

    async def push(self, op: str, payload: dict[str, Any]) -> None:
        await self.redis.rpush(self.key, json.dumps({"op": op, "payload": payload}))

    async def length(self) -> int:
        return int(await self.redis.llen(self.key))

    async def peek(self, count: int) -> list[tuple[str, dict[str, Any]]]:
        raw = await self.redis.lrange(self.key, 0, count - 1)
        entries = []
        for item in raw:
            doc = json.loads(text(item))
            entries.append((str(doc["op"]), dict(doc["payload"])))
        return entries

    async def drop_head(self, count: int) -> None:
        """Remove the first `count` entries (already applied); pushes at the tail are kept."""
        await self.redis.ltrim(self.key, count, -1)

    async def bury_head(self) -> None:
        """Move the head entry to the dead list: it fails for a reason a retry will not fix."""
        await self.redis.lmove(self.key, self.dead_key, "LEFT", "RIGHT")

    async def acquire(self) -> str | None:
        token = uuid.uuid4().hex
        ok = await self.redis.set(self.lock_key, token, nx=True, px=self.lock_ttl_ms)
        return token if ok else None

    async def refresh(self, token: str) -> None:
        if text(await self.redis.get(self.lock_key) or "") == token:
            await self.redis.pexpire(self.lock_key, self.lock_ttl_ms)

    async def release(self, token: str) -> None:
        await self._release(keys=[self.lock_key], args=[token])
