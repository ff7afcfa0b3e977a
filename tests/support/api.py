"""Helpers for the HTTP API tests: the real app on a real Redis and database, reached either
in-process (httpx ASGITransport, lifespan run by hand) or through a real uvicorn socket."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from pipeline.api.app import create_app
from pipeline.settings import Settings, load_settings
from tests.support.servers import uvicorn_in_thread
from tests.support.workers import FAST


def api_settings(
    tmp_path: Path, redis_url: str, prefix: str, database_url: str | None = None, **extra: Any
) -> Settings:
    return load_settings(
        home=tmp_path / "home",
        redis_url=redis_url,
        key_prefix=prefix,
        database_url=database_url or f"sqlite:///{tmp_path / 'ledger.db'}",
        cpu_workers=1,
        **{"provider": "offline", **FAST, **extra},
    )


@contextlib.asynccontextmanager
async def api_client(
    settings: Settings, api_key: str | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The app with its lifespan running, and an httpx client talking ASGI to it."""
    app = create_app(settings)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api.test", headers=headers, timeout=30
        ) as client:
            yield client, app


def pdf_files(*docs: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/pdf")) for name, data in docs]


@contextlib.contextmanager
def live_server(settings: Settings) -> Iterator[str]:
    """The app under a real uvicorn in a thread, on a free 127.0.0.1 port; yields its URL."""
    with uvicorn_in_thread(create_app(settings), what="API server") as url:
        yield url


async def wait_job_done(
    client: httpx.AsyncClient, job_id: str, timeout_s: float = 20
) -> dict[str, Any]:
    """GET /jobs/<id> until the job is terminal and return its JSON body; AssertionError once
    `timeout_s` seconds have passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        body: dict[str, Any] = (await client.get(f"/jobs/{job_id}")).json()
        if body["status"] in ("complete", "failed", "dead", "cancelled", "over_budget"):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not done after {timeout_s}s: {body}")
        await asyncio.sleep(0.05)
