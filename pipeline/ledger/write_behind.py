"""The ledger's write path: every write reaches the database, even while it is down.

A paid call must never go unrecorded because the database blinked. Every write is a named
operation (pipeline/ledger/writes.py); when the database refuses the connection the write
goes to a Redis list instead, and `flush()` replays the list in order once the database is
back. While the list is non-empty new writes queue behind it, so `started` and `settled`
of one attempt always apply in the order they happened. When Redis refuses too, the write
goes to a local spool (spool.py), replayed first.

The reverse must hold too: a write to a healthy database never waits on Redis. Whether the
list is empty is read at most every `_BUFFER_CHECK_S` (and known at once for this process's
own pushes and flushes), with a short timeout, so a Redis outage does not hold up, or lose,
the record of calls that are being paid for meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from pipeline.ledger import writes
from pipeline.ledger.buffer import LedgerBuffer
from pipeline.ledger.db import session_factory
from pipeline.ledger.diskfull import FullDiskAlarm
from pipeline.ledger.spool import LocalSpool
from pipeline.redis.keys import Keys

# One logger for the recorder and its write path: what operators filter on.
log = logging.getLogger("pipeline.ledger.recorder")

_FLUSH_CHUNK = 100
# The writes whose rows say which queue key prefix wrote them (models.JobRow.key_prefix).
_PREFIXED = frozenset({"call_started", "call_settled", "job_upsert"})
# After a connection error, writes go straight to the buffer for this long instead of each
# waiting out its own connect timeout; flush() and the flusher loop keep probing.
_DOWN_BACKOFF_S = 2.0
# How stale the "is the Redis buffer empty?" answer may be, and how long asking may take.
_BUFFER_CHECK_S = 1.0
_BUFFER_CHECK_TIMEOUT_S = 1.0
# How long a push to the Redis buffer may take before the write goes to the local spool.
_PARK_TIMEOUT_S = 5.0


def is_connection_error(exc: BaseException) -> bool:
    """True when the database could not be reached, as opposed to a bad statement."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(
        exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.DisconnectionError
    )


class WriteBehind:
    """Named writes (writes.py) applied to the ledger database, or parked in order in Redis
    (then a local spool) while it is down, and replayed once when it is back; nothing is
    raised to callers for an outage. The base of `SqlRecorder`."""

    def __init__(
        self,
        engine_or_sessionmaker: Engine | sessionmaker[Session],
        redis: aioredis.Redis,
        keys: Keys,
        spool: LocalSpool | None = None,
    ) -> None:
        self.spool = spool
        if isinstance(engine_or_sessionmaker, Engine):
            self.sessions = session_factory(engine_or_sessionmaker)
        else:
            self.sessions = engine_or_sessionmaker
        self.buffer = LedgerBuffer(redis, keys)
        self.key_prefix = keys.prefix
        self._down_until = 0.0
        self._buffered = False
        self._buffer_checked_at = float("-inf")
        self._full_disk = FullDiskAlarm()

    async def write_many(self, entries: list[writes.Entry]) -> None:
        """Apply many writes (writes.*_entry) in one transaction: one commit for a thousand
        documents where one by one costs a commit each. While the database is down (or
        writes queue behind the buffer) they go one by one through the same path as every
        write, parked in order. Raises what one write raises for anything else."""
        entries = [(op, self._stamped(op, payload)) for op, payload in entries]
        if entries and not await self.queue_behind_buffer():
            try:
                await asyncio.to_thread(self._apply, entries)
                return
            except sa_exc.SQLAlchemyError as exc:
                if not is_connection_error(exc):
                    raise
        for op, payload in entries:
            await self._write(op, payload)

    # -- buffering ------------------------------------------------------------------------
    def _db_marked_down(self) -> bool:
        return time.monotonic() < self._down_until

    def _mark_down(self) -> None:
        self._down_until = time.monotonic() + _DOWN_BACKOFF_S

    async def queue_behind_buffer(self) -> bool:
        """Whether a write must wait in the Redis buffer: the database is marked down, or
        the buffer holds writes that must apply first. Redis being unreachable is not a
        reason: the database is where the write belongs."""
        if self._db_marked_down():
            return True
        now = time.monotonic()
        if now - self._buffer_checked_at >= _BUFFER_CHECK_S:
            try:
                length = await asyncio.wait_for(self.buffer.length(), _BUFFER_CHECK_TIMEOUT_S)
            except (RedisError, OSError, TimeoutError):
                length = 0
            self._buffered = length > 0
            self._buffer_checked_at = now
        return self._buffered

    async def _push(self, op: str, payload: dict[str, Any]) -> None:
        await self.buffer.push(op, payload)
        self._buffered = True

    async def write(self, op: str, payload: dict[str, Any]) -> None:
        """Apply one named write (pipeline/ledger/writes.py), or buffer it while the
        database is down."""
        await self._write(op, payload)

    def _stamped(self, op: str, payload: dict[str, Any]) -> dict[str, Any]:
        """A call's or job's row with the key prefix that writes it, stamped before it may
        be parked: a spool replayed by another prefix's process keeps the writer's."""
        if op in _PREFIXED and "key_prefix" not in payload:
            return {**payload, "key_prefix": self.key_prefix}
        return payload

    async def _write(self, op: str, payload: dict[str, Any]) -> None:
        payload = self._stamped(op, payload)
        redis_refused = False
        if await self.queue_behind_buffer():
            if await self._park(op, payload):
                if not self._db_marked_down():
                    await self._try_flush()
                return
            redis_refused = True  # the database may take it after all
        try:
            await asyncio.to_thread(self._apply, [(op, payload)])
        except sa_exc.SQLAlchemyError as exc:
            if not is_connection_error(exc):
                raise
            self._mark_down()
            if not self._full_disk.report(exc):
                log.warning("ledger database unreachable (%s); buffering %s in Redis", exc, op)
            if redis_refused or not await self._park(op, payload):
                await self._spool(op, payload)

    async def _park(self, op: str, payload: dict[str, Any]) -> bool:
        """Push to the Redis buffer; False when Redis refused and a local spool can take it
        (without one, the Redis error propagates)."""
        try:
            await asyncio.wait_for(self._push(op, payload), _PARK_TIMEOUT_S)
            return True
        except (RedisError, OSError, TimeoutError):
            if self.spool is None:
                raise
            return False

    async def _park_or_spool(self, op: str, payload: dict[str, Any]) -> None:
        if not await self._park(op, payload):
            await self._spool(op, payload)

    async def _spool(self, op: str, payload: dict[str, Any]) -> None:
        assert self.spool is not None
        await asyncio.to_thread(self.spool.append, op, payload)

    async def replay_spool(self) -> int:
        """Apply the local spool's writes (see pipeline/ledger/spool.py); 0 while the
        database still refuses them."""
        if self.spool is None or not self.spool.pending():
            return 0
        try:
            return await asyncio.to_thread(self.spool.replay, self._apply)
        except sa_exc.SQLAlchemyError as exc:
            if not is_connection_error(exc):
                raise
            self._mark_down()
            return 0

    def _apply(self, entries: list[tuple[str, dict[str, Any]]]) -> None:
        with self.sessions.begin() as session:
            for op, payload in entries:
                writes.apply(session, op, payload)

    async def _try_flush(self) -> None:
        try:
            await self.flush()
        except Exception:  # the entry is safe in Redis; the flusher loop will retry
            log.exception("ledger flush failed; entries stay buffered")

    async def flush(self) -> int:
        """Replay buffered writes in order; returns how many were applied.

        Stops (entries kept) at the first connection error. An entry that fails for any
        other reason is moved to the dead list rather than blocking the ones behind it.
        The local spool, if any, is replayed first.
        """
        applied = await self.replay_spool()  # first: it needs only the database
        token = await self.buffer.acquire()
        if token is None:
            return applied
        try:
            while True:
                entries = await self.buffer.peek(_FLUSH_CHUNK)
                if not entries:
                    self._buffered = False
                    self._buffer_checked_at = time.monotonic()
                    break
                try:
                    await asyncio.to_thread(self._apply, entries)
                except sa_exc.SQLAlchemyError as exc:
                    if is_connection_error(exc):
                        self._mark_down()
                        self._full_disk.report(exc)
                        return applied
                    applied += await self._apply_one_by_one(entries)
                    continue
                await self.buffer.drop_head(len(entries))
                self._down_until = 0.0
                applied += len(entries)
                await self.buffer.refresh(token)
            return applied
        finally:
            await self.buffer.release(token)

    async def _apply_one_by_one(self, entries: list[tuple[str, dict[str, Any]]]) -> int:
        applied = 0
        for entry in entries:
            try:
                await asyncio.to_thread(self._apply, [entry])
            except sa_exc.SQLAlchemyError as exc:
                if is_connection_error(exc):
                    return applied
                log.error("ledger entry %s cannot be applied (%s); moved to the dead list",
                          entry[0], exc)  # fmt: skip
                await self.buffer.bury_head()
                continue
            await self.buffer.drop_head(1)
            applied += 1
        return applied

    async def run_flusher(self, interval_s: float = 2.0, stop: asyncio.Event | None = None) -> None:
        """Drain the buffer every `interval_s` until `stop` is set; survives any error."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            if await self._buffer_nonempty():
                await self._try_flush()
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            except TimeoutError:
                pass

    async def _buffer_nonempty(self) -> bool:
        try:
            return await self.buffer.length() > 0
        except Exception:
            log.exception("cannot read the ledger buffer length")
            return False
