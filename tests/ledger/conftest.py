"""What the ledger tests share: a database per test on each backend (SQLite, PostgreSQL),
with its engine and recorder, CallAttempt builders, and a Budget with given limits."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from pipeline.ledger import db
from pipeline.ledger.budget import Budget
from pipeline.ledger.recorder import SqlRecorder
from pipeline.llm.attempts import CallAttempt, Outcome
from pipeline.redis.keys import Keys
from pipeline.settings import load_settings
from tests.support.backends import TcpProxy, fresh_pg_database

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextlib.contextmanager
def database_url_for(backend: str, tmp_path: Path, postgres_url: str | None) -> Iterator[str]:
    """A ledger URL of its own for one test: a SQLite file in `tmp_path`, or a fresh PostgreSQL
    database dropped afterwards; skips the test when `backend` is postgres and none is found."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    if postgres_url is None:
        pytest.skip("no PostgreSQL (set PIPELINE_TEST_DATABASE_URL or run one on 127.0.0.1:5432)")
    with fresh_pg_database(postgres_url) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def ledger_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str | None,
    pipeline_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:  # fmt: skip
    """A ledger of its own on each backend, named by PIPELINE_DATABASE_URL for the CLI."""
    with database_url_for(request.param, tmp_path, postgres_url) as url:
        monkeypatch.setenv("PIPELINE_DATABASE_URL", url)
        from pipeline.settings import get_settings

        get_settings.cache_clear()
        yield url


@pytest.fixture(params=BACKENDS)
def engine(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str | None
) -> Iterator[Engine]:
    """A migrated ledger of its own on each backend (the test runs once per backend)."""
    with database_url_for(request.param, tmp_path, postgres_url) as url:
        eng = db.create_ledger_engine(url)
        yield eng
        eng.dispose()


@pytest.fixture
async def recorder(
    engine: Engine, aredis: aioredis.Redis, keys: Keys
) -> AsyncIterator[SqlRecorder]:
    yield SqlRecorder(engine, aredis, keys)


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


def make_budget(
    aredis: aioredis.Redis, keys: Keys, hold_s: float = 900.0, **limits: str
) -> Budget:
    """A Budget with day/month limits given as decimal strings (budget_day_usd="1.00")."""
    settings = load_settings(**{k: Decimal(v) for k, v in limits.items()})
    return Budget(aredis, keys, settings, hold_s=hold_s)


# A fresh PostgreSQL ledger reached through a TCP proxy the test can cut (the outage and
# spool tests); migrated directly, not through the proxy.
@pytest.fixture
def direct_url(postgres_url: str | None) -> Iterator[str]:
    if postgres_url is None:
        pytest.skip("no PostgreSQL (set PIPELINE_TEST_DATABASE_URL or run one on 127.0.0.1:5432)")
    with fresh_pg_database(postgres_url) as url:
        db.create_ledger_engine(url).dispose()  # migrate directly, not through the proxy
        yield url


@pytest.fixture
async def proxy(direct_url: str) -> AsyncIterator[TcpProxy]:
    target = make_url(direct_url)
    p = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
def proxied_engine(direct_url: str, proxy: TcpProxy) -> Iterator[Engine]:
    url = make_url(direct_url).set(host="127.0.0.1", port=proxy.port)
    engine = db.create_ledger_engine(url.render_as_string(hide_password=False), upgrade=False)
    yield engine
    engine.dispose()
