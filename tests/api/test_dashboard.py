"""The dashboard over the real app (ASGI in-process), a real Redis and SQLite: sign-in with
an HttpOnly cookie, the state it shows after real work, and the Retry button's requeue."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from pipeline.queue import QueueClient
from pipeline.redis.connection import connect_redis
from pipeline.services import build_worker
from tests.support import llm_tasks, metrics_tasks
from tests.support.api import api_client, api_settings


async def test_sign_in_sets_an_httponly_cookie_and_guards_every_page(
    tmp_path: Path, redis_url: str, key_prefix: str, aredis: object
) -> None:
    settings = api_settings(
        tmp_path, redis_url, key_prefix, api_keys="key-one-01234567,key-two-01234567"
    )
    async with api_client(settings) as (client, _):
        page = await client.get("/", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/login"
        assert (await client.get("/dashboard/state")).status_code == 401
        assert (await client.get("/dashboard/panels")).status_code == 401
        assert (await client.get("/healthz")).status_code == 200
        login = await client.get("/login")
        assert login.status_code == 200 and 'name="key"' in login.text
        wrong = await client.post("/login", data={"key": "nope"}, follow_redirects=False)
        assert wrong.status_code == 401 and "PIPELINE_API_KEYS" in wrong.text
        assert "set-cookie" not in wrong.headers
        right = await client.post(
            "/login", data={"key": "key-two-01234567"}, follow_redirects=False
        )
        assert right.status_code == 303 and right.headers["location"] == "/"
        cookie = right.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        page = await client.get("/")  # the client keeps the cookie
        assert page.status_code == 200 and "<h2>Queues</h2>" in page.text
        assert "/static/vendor/chart.umd.min.js" in page.text
        lib = await client.get("/static/vendor/chart.umd.min.js")
        assert lib.status_code == 200 and "Chart.js v4" in lib.text[:200]
        await client.post("/logout")
        client.cookies.clear()
        assert (await client.get("/dashboard/state")).status_code == 401
        bearer = await client.get(
            "/dashboard/state", headers={"Authorization": "Bearer key-one-01234567"}
        )
        assert bearer.status_code == 200
        # The API's own routes still want the bearer header, not the cookie.
        client.cookies.set("pipeline_session", "key-one-01234567")
        assert (await client.get("/costs")).status_code == 401


async def test_state_after_real_work_and_retry_of_a_dead_job(
    tmp_path: Path, redis_url: str, key_prefix: str, aredis: object
) -> None:
    settings = api_settings(tmp_path, redis_url, key_prefix)
    qc = QueueClient(connect_redis(redis_url), settings=settings)
    worker = await build_worker(qc, queues=["default"], concurrency=2)
    run = asyncio.create_task(worker.run(install_signals=False))
    try:
        done = [await qc.enqueue(metrics_tasks.work, i) for i in range(2)]
        ask = await qc.enqueue(llm_tasks.ask, "what is in the report?")
        broken = await qc.enqueue(metrics_tasks.broken, "the parser choked on page 3")
        for handle in [*done, ask]:
            await handle.result(timeout_s=30)
        assert (await qc.wait(broken.id, 30)).state.value == "dead"
        await worker.deps["services"].recorder.flush()  # rows buffered in Redis, if any
    finally:
        worker.stop()
        await asyncio.wait_for(run, 30)
    async with api_client(settings) as (client, _):
        state = (await client.get("/dashboard/state")).json()
        assert state["queues"]["dead"] == 1 and state["queues"]["ready"] == 0
        assert state["totals"]["settled"]["complete"] == 3
        [failure] = state["failures"]
        assert failure["id"] == broken.id and "the parser choked" in failure["error"]
        assert failure["attempts"] == 2 and failure["task"] == "m.broken"
        assert state["spend"]["days"][-1] == datetime.now(UTC).date().isoformat()
        assert len(state["spend"]["days"]) == 14
        assert "offline analyzer ($0)" in state["spend"]["models"]  # its $0 call, named as such
        assert {m["model"] for m in state["limiter"]} >= {settings.model}
        # The offline call reached no provider: nothing counted against Gemini's quota, and
        # the panel says which numbers are used and which may start now (full when idle).
        lite = next(m for m in state["limiter"] if m["model"] == llm_tasks.MODEL)
        assert lite["requests_today"] == 0 and lite["requests_in_window"] == 0, lite
        assert lite["requests_left"] == lite["requests_burst"] > 0, lite
        assert set(state["budgets"]) == {"day", "month"}
        panels = (await client.get("/dashboard/panels")).text
        assert f'data-retry="{broken.id}"' in panels and "the parser choked" in panels
        assert "requests used / limit (today)" in panels and "idle, it is full" in panels
        assert f"0 / {lite['limits']['rpd']}" in panels

        url = f"/dashboard/jobs/{broken.id}/retry"
        forged = await client.post(url)  # no custom header: what a cross-site form would send
        assert forged.status_code == 403
        assert (await qc.get(broken.id)).state.value == "dead"
        ok = await client.post(url, headers={"X-Pipeline-Action": "retry"})
        assert ok.status_code == 200 and ok.json()["status"] == "queued"
        job = await qc.get(broken.id)
        assert job.state.value == "queued" and job.attempt == 0
        again = await client.post(url, headers={"X-Pipeline-Action": "retry"})
        assert again.status_code == 409
        missing = await client.post(
            "/dashboard/jobs/nope/retry", headers={"X-Pipeline-Action": "retry"}
        )
        assert missing.status_code == 404 and "nope" in missing.json()["detail"]
        state = (await client.get("/dashboard/state")).json()
        assert state["queues"]["dead"] == 0 and state["queues"]["ready"] == 1
        assert state["failures"] == []
    await qc.aclose()
