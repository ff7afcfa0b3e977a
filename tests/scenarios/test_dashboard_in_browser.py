"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a real
`pipeline serve` process, with a real worker process analysing the example PDFs through the
Gemini emulator. It signs in, watches the counts change by themselves, presses Retry on a
dead job, and saves a screenshot in the test's tmp dir (and as docs/dashboard.png when
PIPELINE_TEST_UPDATE_DOCS=1).

Chromium comes from Debian's package, installed by `make test`'s setup (`make browser`), never
by the test and never by `playwright install` (which downloads a browser build); the test
skips, naming the command, where it is missing.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.queue import QueueClient
from pipeline.redis.connection import connect_redis
from pipeline.settings import load_settings
from tests.support import ROOT, metrics_tasks
from tests.support.emulator import start_emulator
from tests.support.paid_workers import llm_env
from tests.support.waiting import until
from tests.support.workers import WorkerProcess

CHROMIUM = "/usr/bin/chromium"
KEY = "browser-key-0123456789"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip

pytestmark = pytest.mark.slow


def _ensure_chromium() -> str:
    if not os.path.exists(CHROMIUM):
        pytest.skip(
            "no /usr/bin/chromium: `make test` sets it up as root (`make browser`, Debian's "
            "chromium package); or add that package yourself"
        )
    return CHROMIUM


def _serve(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "serve", "--host", "127.0.0.1", "--port", "0",
         "--log-level", "warning"],
        env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.stderr is not None
    line = proc.stderr.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+", line)
    if not match:
        proc.kill()
        raise AssertionError(f"`pipeline serve` did not start: {line}{proc.stderr.read()}")
    return proc, match.group(0)


def _submit(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "submit", *args],
        env=env, capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def _enqueue(redis_url: str, prefix: str, works: int, broken: int) -> list[str]:
    """In a thread of its own: Playwright's sync API owns this thread's event loop."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _aenqueue(redis_url, prefix, works, broken)).result()


async def _aenqueue(redis_url: str, prefix: str, works: int, broken: int) -> list[str]:
    qc = QueueClient(connect_redis(redis_url), settings=load_settings(key_prefix=prefix))
    try:
        ids = [(await qc.enqueue(metrics_tasks.work, i, 0.3)).id for i in range(works)]
        for i in range(broken):
            handle = await qc.enqueue(metrics_tasks.broken, f"page {i + 3}: no text layer")
            ids.append(handle.id)
        return ids
    finally:
        await qc.aclose()


@pytest.fixture
def stack(
    tmp_path: Path, redis_url: str, key_prefix: str, sredis: object
) -> Iterator[tuple[str, dict[str, str]]]:
    """Emulator, one worker process and `pipeline serve`; yields the server URL and env."""
    with start_emulator(latency_s=(0.2, 0.6)) as emu:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
        env.update(llm_env(emu, f"sqlite:///{tmp_path / 'ledger.db'}", str(tmp_path / "home")))
        env.update({
            "PIPELINE_REDIS_URL": redis_url, "PIPELINE_KEY_PREFIX": key_prefix,
            "PIPELINE_API_KEYS": KEY, "PYTHONPATH": str(ROOT), "PIPELINE_CPU_WORKERS": "1",
            "PIPELINE_BUDGET_DAY_USD": "2",
        })  # fmt: skip
        worker_env = {
            k: v for k, v in env.items() if k.startswith(("PIPELINE_", "GOOGLE", "GEMINI"))
        }
        worker = WorkerProcess(
            redis_url, key_prefix, "--concurrency", "4",
            imports=("tasks.analyze", "tests.support.metrics_tasks"), **worker_env,
        )  # fmt: skip
        proc, url = _serve(env)
        try:
            yield url, env
        finally:
            proc.terminate()
            proc.wait(30)
            worker.close()


def test_dashboard_in_chromium(
    stack: tuple[str, dict[str, str]], tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    chromium = _ensure_chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip package playwright")
    url, env = stack
    docs = sorted(str(p) for p in (ROOT / "examples" / "docs").glob("*.pdf"))
    _submit(env, *docs[:2], "--label", "contracts", "--budget", "0.50")
    _submit(env, *docs[2:], "--label", "reports")
    _enqueue(redis_url, key_prefix, works=4, broken=1)

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            blocked: list[str] = []  # the page runs under the server's CSP: nothing refused
            page.on("console", lambda m: blocked.append(m.text)
                    if "Content Security Policy" in m.text else None)  # fmt: skip
            page.goto(url + "/")
            assert page.url.endswith("/login")
            page.fill("input[name=key]", KEY)
            page.click("button[type=submit]")
            page.wait_for_selector("#panels [data-count=complete]")
            first = int(page.inner_text("[data-count=complete]"))

            # More work arrives; the page must show it without being reloaded.
            _enqueue(redis_url, key_prefix, works=6, broken=0)
            complete = "Number(document.querySelector('[data-count=complete]').textContent)"
            _wait_js(page, f"{complete} >= {first + 6}", timeout=60_000)
            page.wait_for_selector("button[data-retry]", timeout=60_000)
            job_id = page.get_attribute("button[data-retry]", "data-retry")
            assert job_id
            page.click(f"button[data-retry='{job_id}']")
            until(lambda: _dead_again(redis_url, key_prefix, job_id), 30, "the retried job")
            seen_ms = int(time.time() * 1000)
            # Spend reaches the chart once the analyses are in the ledger.
            _wait_js(page,
                "JSON.parse(document.getElementById('spend-data').textContent).models.length > 0",
                timeout=60_000,
            )
            _wait_js(page,
                "document.querySelectorAll('progress').length >= 2"
                " && [...document.querySelectorAll('progress')].every(p => p.value >= 1)",
                timeout=90_000,
            )
            # The retried job fails again (it always does) and is back in the failures panel.
            _wait_js(page,
                f"Number(document.getElementById('panel-meta').dataset.nowMs) > {seen_ms}"
                " && Number(document.querySelector('[data-count=dead]').textContent) >= 1",
                timeout=60_000,
            )
            assert "no text layer" in page.inner_text("#panels")
            assert "contracts" in page.inner_text("#panels")
            assert page.inner_text("#live") == "live"
            assert blocked == []
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("PIPELINE_TEST_UPDATE_DOCS"):  # refresh the README picture
                (ROOT / "docs").mkdir(exist_ok=True)
                shutil.copyfile(shot, ROOT / "docs" / "dashboard.png")
        finally:
            browser.close()


def _wait_js(page: Any, expression: str, timeout: float) -> None:
    """Poll a JS expression through DevTools evaluation: Playwright's own wait_for_function
    evaluates strings inside the page, which the dashboard's CSP (no eval) refuses."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout / 1000:g}s waiting for {expression}")
        time.sleep(0.2)


def _dead_again(redis_url: str, prefix: str, job_id: str) -> bool:
    """Requeued by the button, then dead again after its two attempts."""
    import redis

    from pipeline.redis.keys import Keys

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        requeued, state = client.hmget(Keys(prefix).job(job_id), ["requeued_ms", "state"])
        return bool(requeued) and state == "dead"
    finally:
        client.close()
