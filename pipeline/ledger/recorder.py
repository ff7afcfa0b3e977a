"""`SqlRecorder`: the ledger side of `pipeline.llm.attempts.Recorder`, plus the task layer's writes.

A paid call must never go unrecorded because the database blinked. Every write is a named
operation (pipeline/ledger/writes.py); when the database refuses the connection the write
goes to a Redis list instead, and `flush()` replays the list in order once the database is
back. While the list is non-empty new writes queue behind it, so `started` and `settled`
of one attempt always apply in the order they happened.

The reverse must hold too: a write to a healthy database never waits on Redis. Whether the
list is empty is read at most every `_BUFFER_CHECK_S` (and known at once for this process's
own pushes and flushes), with a short timeout, so a Redis outage does not hold up, or lose,
the record of calls that are being paid for meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import Engine, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from pipeline.errors import DatabaseUnavailable
from pipeline.ledger import writes
from pipeline.ledger.buffer import LedgerBuffer
from pipeline.ledger.db import session_factory
from pipeline.ledger.diskfull import FullDiskAlarm
from pipeline.ledger.models import Document, LLMCall, Result
from pipeline.ledger.spool import LocalSpool
from pipeline.llm.attempts import CallAttempt
from pipeline.redis.keys import Keys

log = logging.getLogger(__name__)

_FLUSH_CHUNK = 100
# After a connection error, writes go straight to the buffer for this long instead of each
# waiting out its own connect timeout; flush() and the flusher loop keep probing.
_DOWN_BACKOFF_S = 2.0
_DEFAULT_MAX_OUTPUT_TOKENS = 2048
# How stale the "is the Redis buffer empty?" answer may be, and how long asking may take.
_BUFFER_CHECK_S = 1.0
_BUFFER_CHECK_TIMEOUT_S = 1.0
# How long a push to the Redis buffer may take before the write goes to the local spool.
_PARK_TIMEOUT_S = 5.0


class WorstCasePricer(Protocol):
    def worst_case_cost(
        self, model: str, input_tokens: int, max_output_tokens: int, at: datetime
    ) -> Decimal: ...


def is_connection_error(exc: BaseException) -> bool:
    """True when the database could not be reached, as opposed to a bad statement."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(
        exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.DisconnectionError
    )


class SqlRecorder:
    """The ledger's side of the LLM layer's Recorder: each call attempt becomes an
    `llm_calls` row, written `started` before the request and settled after; jobs, batches,
    documents and results get their rows too. While the database is down, writes wait in a
    Redis list and are replayed in order, once, when it is back (nothing raised to callers).
    """

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
        self._down_until = 0.0
        self._buffered = False
        self._buffer_checked_at = float("-inf")
        self._full_disk = FullDiskAlarm()

    # -- the Recorder protocol ------------------------------------------------------------
    async def started(self, call: CallAttempt) -> None:
        await self._write("call_started", writes.call_payload(call))

    async def settled(self, call: CallAttempt) -> None:
        await self._write("call_settled", writes.call_payload(call))

    # -- lease expiry ---------------------------------------------------------------------
    async def mark_abandoned(
        self,
        job_id: str | None,
        prices: WorstCasePricer | None = None,
        before: datetime | None = None,
        *,
        ids: list[str] | None = None,
    ) -> int | None:
        """Every STARTED attempt of `job_id` (or, with `ids`, those attempts) becomes
        ABANDONED, costed at its worst case.

        `before` (the lost lease's deadline) spares calls started after it: by then the job
        may be running again on another worker, and that live call is not abandoned.

        Returns how many rows changed, or None when the database is down and the change
        was buffered (it then uses each row's own `estimated_cost_usd`).
        """
        now = datetime.now(UTC)
        payload: dict[str, Any] = {"job_id": job_id, "finished_at": now.isoformat()}
        if ids is not None:
            payload["ids"] = list(ids)
        if before is not None:
            payload["before"] = before.isoformat()
        if not await self.queue_behind_buffer():
            try:
                return await asyncio.to_thread(self._abandon_now, payload, prices, now)
            except sa_exc.SQLAlchemyError as exc:
                if not is_connection_error(exc):
                    raise
                self._mark_down()
                log.warning("ledger database unreachable; buffering abandon of job %s", job_id)
        await self._park_or_spool("call_abandoned", payload)
        return None

    def _abandon_now(
        self, payload: dict[str, Any], prices: WorstCasePricer | None, now: datetime
    ) -> int:
        with self.sessions.begin() as session:
            rows = session.scalars(select(LLMCall).where(*writes.abandon_filter(payload))).all()
            estimates: dict[str, str] = {}
            for row in rows:
                if prices is not None and not row.estimated_cost_usd:
                    at = row.started_at  # SQLite hands back naive UTC datetimes
                    at = at if at.tzinfo else at.replace(tzinfo=UTC)
                    cost = prices.worst_case_cost(
                        row.model, row.input_tokens, _DEFAULT_MAX_OUTPUT_TOKENS, at
                    )
                    estimates[row.id] = str(cost)
            writes.call_abandoned(session, {**payload, "estimates": estimates})
            return len(rows)

    # -- the task layer's writes ----------------------------------------------------------
    async def upsert_batch(
        self,
        batch_id: str,
        *,
        label: str | None = None,
        budget_usd: Decimal | None = None,
        status: str | None = None,
    ) -> None:
        payload = {"id": batch_id, "label": label, "status": status,
                   "budget_usd": None if budget_usd is None else str(budget_usd)}  # fmt: skip
        await self._write("batch_upsert", payload)

    async def upsert_document(
        self,
        sha256: str,
        *,
        file_name: str | None = None,
        size_bytes: int | None = None,
        pages: int | None = None,
        document_id: str | None = None,
    ) -> str:
        """Returns the document id: `document_id` if given, else the sha256 itself."""
        op, payload = writes.document_entry(sha256, file_name=file_name, size_bytes=size_bytes,
                                            pages=pages, document_id=document_id)  # fmt: skip
        await self._write(op, payload)
        return str(payload["id"])

    async def add_to_batch(self, batch_id: str, document_id: str, **fields: str | None) -> None:
        """Record `document_id` as a member of `batch_id`, answered by the run rooted at
        `job_id` (given again when a retry starts a new run); fields as in
        writes.batch_member_entry (job_id, name, model, prompt_version), None left as is."""
        await self._write(*writes.batch_member_entry(batch_id, document_id, **fields))

    async def upsert_job(self, job_id: str, **fields: Any) -> None:
        """A job row; fields as in writes.job_entry (batch_id, document_id, status, attempts,
        started_at, finished_at, last_error), None left as is."""
        await self._write(*writes.job_entry(job_id, **fields))

    async def write_many(self, entries: list[writes.Entry]) -> None:
        """Apply many writes (writes.*_entry) in one transaction: one commit for a thousand
        documents where one by one costs a commit each. While the database is down (or
        writes queue behind the buffer) they go one by one through the same path as every
        write, parked in order. Raises what one write raises for anything else."""
        if entries and not await self.queue_behind_buffer():
            try:
                await asyncio.to_thread(self._apply, entries)
                return
            except sa_exc.SQLAlchemyError as exc:
                if not is_connection_error(exc):
                    raise
        for op, payload in entries:
            await self._write(op, payload)

    async def update_job_status(
        self,
        job_id: str,
        status: str,
        *,
        attempts: int | None = None,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
        last_error: str | None = None,
    ) -> None:
        await self.upsert_job(
            job_id, status=status, attempts=attempts, started_at=started_at,
            finished_at=finished_at, last_error=last_error,
        )  # fmt: skip

    async def save_result(
        self, document_id: str, model: str, prompt_version: str, data: Any
    ) -> None:
        payload = {"document_id": document_id, "model": model,
                   "prompt_version": prompt_version, "data": data}  # fmt: skip
        await self._write("result_save", payload)

    async def get_result(self, sha256: str, model: str, prompt_version: str) -> Any | None:
        """The stored answer for this document, model and prompt version, or None."""

        def read() -> Any | None:
            with self.sessions() as session:
                return session.scalar(
                    select(Result.data)
                    .join(Document, Document.id == Result.document_id)
                    .where(
                        Document.sha256 == sha256,
                        Result.model == model,
                        Result.prompt_version == prompt_version,
                    )
                )

        try:
            return await asyncio.to_thread(read)
        except sa_exc.SQLAlchemyError as exc:
            if is_connection_error(exc):
                raise DatabaseUnavailable(
                    f"cannot read stored results: {str(exc).splitlines()[0]} — "
                    "check that the ledger database is up (PIPELINE_DATABASE_URL)"
                ) from exc
            raise

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

    async def _write(self, op: str, payload: dict[str, Any]) -> None:
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
