"""The smaller faults of issue 11: NUL bytes are a 400/422 (not a 503 "retry"), the public
/healthz says only ok/degraded, the dashboard cookie is a signed session id (never the key),
/login is rate limited, API keys have a minimum length, every answer carries the security
headers, POST /analyze answers 503 at once while Redis is down, and a ledger database that
is out of space is logged by the writer and reported by /healthz.

The real app (in-process ASGI or uvicorn), real Redis (a private server for the outage),
SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy import event

from pipeline.errors import SettingsError
from pipeline.ledger.db import create_ledger_engine
from pipeline.ledger.recorder import SqlRecorder
from pipeline.redis.keys import Keys
from pipeline.settings import load_settings
from tests.api.multipart import HEADERS, multipart
from tests.support.api import api_client, api_settings, pdf_files
from tests.support.backends import fresh_pg_database
from tests.support.pdfs import make_pdf
from tests.support.private_redis import PrivateRedis

KEY = "right-key-0123456789abcdef"


@pytest.fixture
def pg_url(postgres_url: str | None) -> Iterator[str]:
    if postgres_url is None:
        pytest.skip("no PostgreSQL (set PIPELINE_TEST_DATABASE_URL or run one on 127.0.0.1:5432)")
    with fresh_pg_database(postgres_url, "api") as url:
        yield url


@pytest.mark.postgres
async def test_nul_bytes_are_refused_not_a_503_on_postgresql(
    tmp_path: Path, redis_url: str, key_prefix: str, aredis: object, pg_url: str
) -> None:
    settings = api_settings(tmp_path, redis_url, key_prefix, database_url=pg_url)
    async with api_client(settings) as (client, _):
        for path in ("/jobs/abc%00def", "/batches/x%00", "/costs?since=2026%00"):
            r = await client.get(path)
            assert r.status_code == 400 and "NUL" in r.json()["detail"], (path, r.text)
            assert "Retry-After" not in r.headers
        body = multipart((b'form-data; name="files"; filename="a\x00.pdf"', make_pdf(1)))
        r = await client.post("/analyze", content=body, headers=HEADERS)
        assert r.status_code == 422 and "NUL" in r.json()["detail"], r.text
        r = await client.post("/analyze", files=pdf_files(("a.pdf", make_pdf(1))),
                              data={"label": "a\x00b"})  # fmt: skip
        assert r.status_code == 422 and "NUL" in r.json()["detail"], r.text


async def test_public_healthz_says_only_ok_and_details_need_a_key(
    tmp_path: Path, redis_url: str, key_prefix: str, aredis: object
) -> None:
    settings = api_settings(tmp_path, redis_url, key_prefix, api_keys=KEY)
    async with api_client(settings) as (anon, _):
        r = await anon.get("/healthz")
        assert (r.status_code, r.json()) == (200, {"status": "ok"})
        r = await anon.get("/healthz", headers={"Authorization": f"Bearer {KEY}"})
        assert r.json() == {"status": "ok", "redis": "ok", "database": "ok", "ledger": "ok"}
    down = api_settings(tmp_path, "redis://127.0.0.1:1/0", key_prefix, api_keys=KEY)
    async with api_client(down) as (anon, _):
        r = await anon.get("/healthz")
        assert (r.status_code, r.json()) == (503, {"status": "degraded"})
        assert "127.0.0.1" not in r.text


async def test_the_dashboard_cookie_is_a_signed_session_not_the_key(
    tmp_path: Path, redis_url: str, key_prefix: str, aredis: object
) -> None:
    settings = api_settings(tmp_path, redis_url, key_prefix, api_keys=KEY)
    async with api_client(settings) as (client, _):
        r = await client.post("/login", data={"key": KEY}, follow_redirects=False)
        assert r.status_code == 303
        cookie = client.cookies["pipeline_session"]
        assert KEY not in cookie and KEY not in r.headers["set-cookie"]
        assert (await client.get("/dashboard/state")).status_code == 200
        session_id, _, signature = cookie.partition(".")
        for forged in (KEY, f"{session_id}.{'0' * len(signature)}", f"x{session_id}.{signature}"):
            client.cookies.set("pipeline_session", forged)
            assert (await client.get("/dashboard/state")).status_code == 401, forged
        client.cookies.set("pipeline_session", cookie)
        await client.post("/logout")
        client.cookies.set("pipeline_session", cookie)  # a stolen copy, after sign-out
        assert (await client.get("/dashboard/state")).status_code == 401


async def test_login_is_rate_limited_per_client(
    tmp_path: Path, redis_url: str, key_prefix: str, aredis: object
) -> None:
    settings = api_settings(tmp_path, redis_url, key_prefix, api_keys=KEY)
    async with api_client(settings) as (client, _):
        for _ in range(10):
            r = await client.post("/login", data={"key": "wrong-key-0123456789"})
            assert r.status_code == 401
        r = await client.post("/login", data={"key": KEY}, follow_redirects=False)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
        assert "pipeline_session" not in client.cookies


def test_api_keys_have_a_minimum_length_and_the_error_does_not_echo_them() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(api_keys=f"{KEY},hunter2")
    message = str(info.value)
    assert "api_keys" in message and "16 characters" in message and "token_urlsafe" in message
    assert "hunter2" not in message
    assert load_settings(api_keys=KEY).api_key_list == [KEY]


async def test_security_headers_on_every_answer(
    tmp_path: Path, redis_url: str, key_prefix: str, aredis: object
) -> None:
    settings = api_settings(tmp_path, redis_url, key_prefix)
    async with api_client(settings) as (client, _):
        for path in ("/healthz", "/", "/login", "/jobs/nope", "/docs"):
            r = await client.get(path)
            assert "default-src 'self'" in r.headers["Content-Security-Policy"], path
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"], path
            assert r.headers["X-Frame-Options"] == "DENY", path
            assert r.headers["X-Content-Type-Options"] == "nosniff", path
            assert "Strict-Transport-Security" not in r.headers, path
        r = await client.get("https://api.test/healthz")  # as behind a TLS proxy
        assert r.headers["Strict-Transport-Security"].startswith("max-age=")


async def test_analyze_answers_503_at_once_while_redis_is_down(
    tmp_path: Path, key_prefix: str
) -> None:
    with PrivateRedis(tmp_path / "redis") as server:
        settings = api_settings(tmp_path, server.url, key_prefix)
        async with api_client(settings) as (client, _):
            assert (await client.post("/analyze", files=pdf_files(("a.pdf", make_pdf(1))))
                    ).status_code == 202  # fmt: skip
            server.kill()
            t0 = time.monotonic()
            r = await client.post("/analyze", files=pdf_files(("b.pdf", make_pdf(2))))
            waited = time.monotonic() - t0
    assert r.status_code == 503 and r.headers["Retry-After"].isdigit(), r.text
    assert "Redis" in r.json()["detail"]
    assert waited < 8.0  # the connection's own retries would take ~30 s


async def test_a_full_ledger_disk_is_logged_and_healthz_says_degraded(
    tmp_path: Path, redis_url: str, key_prefix: str, aredis: aioredis.Redis, keys: Keys,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """SQLite's max_page_count caps the file where it is, so the next write fails with
    SQLITE_FULL ("database or disk is full"), exactly as on a full disk."""
    settings = api_settings(tmp_path, redis_url, key_prefix)
    async with api_client(settings) as (client, _):
        engine = create_ledger_engine(str(settings.database_url))

        @event.listens_for(engine, "connect")
        def _cap(dbapi_conn: object, _record: object) -> None:
            cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]
            pages = cursor.execute("PRAGMA page_count").fetchone()[0]
            cursor.execute(f"PRAGMA max_page_count = {pages}")
            cursor.close()

        recorder = SqlRecorder(engine, aredis, keys)
        with caplog.at_level(logging.ERROR, logger="pipeline.ledger.recorder"):
            for i in range(200):
                await recorder.upsert_batch(f"batch-{i}", label="x" * 190)
        engine.dispose()
        full = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert full and "out of space" in full[0].getMessage()
        assert len(full) <= 2  # logged, not once per write
        assert await recorder.buffer.length() > 0  # the writes wait, none is lost
        r = await client.get("/healthz")
        assert r.status_code == 503 and r.json()["status"] == "degraded"
        assert r.json()["ledger"].startswith("degraded") and r.json()["database"] == "ok"
