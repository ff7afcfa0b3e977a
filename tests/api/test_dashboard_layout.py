"""The dashboard's layout in Chromium: a $0 spend chart starts its axis at $0 (no negative
axis), and a batch's id and long label stay on one line. The real app under uvicorn, a real
Redis and SQLite, Debian's Chromium driven by Playwright (skipped where either is missing)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pipeline.queue import QueueClient
from pipeline.redis.connection import connect_redis
from pipeline.services import build_worker
from tests.scenarios.test_dashboard_in_browser import CHROMIUM_ARGS, _ensure_chromium
from tests.support import llm_tasks
from tests.support.api import api_settings, live_server

pytestmark = pytest.mark.slow


async def _free_call_and_a_long_batch(settings: object, redis_url: str) -> None:
    from pipeline.ledger.recorder import SqlRecorder

    qc = QueueClient(connect_redis(redis_url), settings=settings)  # type: ignore[arg-type]
    worker = await build_worker(qc, queues=["default"], concurrency=1)
    run = asyncio.create_task(worker.run(install_signals=False))
    try:
        await (await qc.enqueue(llm_tasks.ask, "what is in the report?")).result(timeout_s=30)
        services = worker.deps["services"]
        label = "quarterly supplier contracts of the northern region, " * 4
        await SqlRecorder(services.engine, qc.redis, qc.keys).upsert_batch(
            "b" * 32, label=label.strip(), status="open")  # fmt: skip
        await services.recorder.flush()
    finally:
        worker.stop()
        await asyncio.wait_for(run, 30)
        await qc.aclose()


def test_zero_spend_chart_and_one_line_batch_titles(
    tmp_path: Path, redis_url: str, key_prefix: str, aredis: object
) -> None:
    chromium = _ensure_chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip package playwright")
    settings = api_settings(tmp_path, redis_url, key_prefix)
    asyncio.run(_free_call_and_a_long_batch(settings, redis_url))
    with live_server(settings) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.goto(url + "/")
            page.wait_for_function("window.Chart && Chart.getChart('spend-chart')")
            scale = page.evaluate("(() => { const y = Chart.getChart('spend-chart').scales.y;"
                                  " return [y.min, y.max]; })()")  # fmt: skip
            assert scale[0] == 0 and scale[1] > 0, scale  # the $0 offline call: no -1 axis
            title = page.locator(f"tr[data-batch='{'b' * 32}'] td.batch-title")
            height = title.evaluate("el => el.getBoundingClientRect().height")
            line = title.evaluate("el => parseFloat(getComputedStyle(el).lineHeight)")
            assert height < 2 * line + 12, (height, line)  # one line, however long the label
        finally:
            browser.close()
