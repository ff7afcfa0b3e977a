"""`GET /healthz`: is this API able to take and record work?

Checked on every call, each with a short timeout: Redis answers PING, the ledger database
answers a query, and no ledger writes are waiting in the Redis buffer (writes pile up there
when the database refuses them, e.g. a full disk, though it still answers reads). The
answer is `{"status": "ok"}` (200) or `{"status": "degraded"}` (503). Without a key, that
is all anyone is told: what is down, and where it lives (hosts, ports, errors), is for
callers with one of PIPELINE_API_KEYS (or any caller when none are set, since the server
then listens on loopback only).
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

HEALTH_TIMEOUT_S = 3.0


def _may_see_details(request: Request) -> bool:
    keys: list[str] = request.app.state.settings.api_key_list
    if not keys:
        return True
    header = request.headers.get("authorization", "")
    given = header[7:].strip() if header.lower().startswith("bearer ") else ""
    return any(hmac.compare_digest(given.encode(), k.encode()) for k in keys)


async def _checks(api: Any) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(api.client.redis.ping(), HEALTH_TIMEOUT_S)
        checks["redis"] = "ok"
    except Exception as exc:  # any failure is "down", reported rather than raised
        checks["redis"] = f"down: {exc.__class__.__name__}: {exc}"

    def db_ping() -> None:
        with api.services.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    try:
        await asyncio.wait_for(asyncio.to_thread(db_ping), HEALTH_TIMEOUT_S)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"down: {exc.__class__.__name__}: {str(exc).splitlines()[0]}"
    if checks["redis"] == "ok":
        try:
            waiting = await asyncio.wait_for(
                api.services.recorder.buffer.length(), HEALTH_TIMEOUT_S
            )
        except Exception as exc:
            checks["ledger"] = f"unknown: {exc.__class__.__name__}: {exc}"
        else:
            checks["ledger"] = "ok" if waiting == 0 else (
                f"degraded: {waiting} writes waiting in Redis for the database (it refuses "
                "writes: disk full, read-only, or down; see the worker logs)"
            )  # fmt: skip
    return checks


async def healthz(request: Request) -> JSONResponse:
    """Redis and the ledger reachable and writable: 200 `ok`, else 503 `degraded`."""
    checks = await _checks(request.app.state.api)
    ok = all(v == "ok" for v in checks.values())
    body: dict[str, str] = {"status": "ok" if ok else "degraded"}
    if _may_see_details(request):
        body.update(checks)
    return JSONResponse(body, status_code=200 if ok else 503)
