"""Shared pieces of the ledger tests: a database per test (SQLite or PostgreSQL), a TCP proxy
to cut the PostgreSQL connection on demand, and CallAttempt builders."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from pipeline.llm.attempts import CallAttempt, Outcome

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextlib.contextmanager
def fresh_pg_database(postgres_url: str, prefix: str = "ledger") -> Iterator[str]:
    """CREATE DATABASE <prefix>_<random> through the `test` database; DROP it (FORCE) after."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def database_url_for(backend: str, tmp_path: Path, postgres_url: str | None) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    if postgres_url is None:
        pytest.skip("no PostgreSQL (set PIPELINE_TEST_DATABASE_URL or run one on 127.0.0.1:5432)")
    with fresh_pg_database(postgres_url) as url:
        yield url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; `stop()` closes the listener and every live
    connection (the database 'goes away'), `start()` brings it back on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            dst.transport.abort()
            self._writers.discard(dst)


def attempt(
    *,
    job_id: str = "job-1",
    batch_id: str | None = "batch-1",
    document_id: str | None = "doc-1",
    model: str = "gemini-3.5-flash-lite",
    attempt_no: int = 1,
    started_at: datetime | None = None,
    estimated: str = "0.01",
) -> CallAttempt:
    return CallAttempt(
        attempt_id=uuid.uuid4().hex,
        call_key=f"ck-{uuid.uuid4().hex[:8]}",
        model=model,
        attempt=attempt_no,
        started_at=started_at or datetime.now(UTC),
        job_id=job_id,
        batch_id=batch_id,
        document_id=document_id,
        estimated_cost_usd=Decimal(estimated),
    )


def settle(call: CallAttempt, outcome: Outcome, cost: str, **usage: Any) -> CallAttempt:
    """Fill in what the LLM layer knows once the attempt is over."""
    call.outcome = outcome
    call.cost_usd = Decimal(cost)
    call.model_version = usage.pop("model_version", call.model)
    call.latency_s = usage.pop("latency_s", 1.5)
    call.finished_at = call.started_at + timedelta(seconds=call.latency_s or 0)
    call.price_version = "2026-11"
    for name, value in usage.items():
        setattr(call, name, value)
    return call


def make_budget(aredis: Any, keys: Any, hold_s: float = 900.0, **limits: str) -> Any:
    """A Budget with day/month limits given as decimal strings (budget_day_usd="1.00")."""
    from pipeline.ledger.budget import Budget
    from pipeline.settings import load_settings

    settings = load_settings(**{k: Decimal(v) for k, v in limits.items()})
    return Budget(aredis, keys, settings, hold_s=hold_s)
