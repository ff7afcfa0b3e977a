"""The day and month budgets are the shared ledger's, whatever the key prefix: `pipeline
status` under a prefix no worker has run under shows the ledger's spend for the day and the
month (never $0 when the ledger has spend), and a worker under such a prefix admits no call
past a day limit the ledger has reached, even when the periodic reconcile pass is skipped
(its lock held by a pass that ran a moment ago, before that spend). Real `pipeline`
processes, real Redis, the ledger on SQLite and PostgreSQL, the google-genai client against
the emulator."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from pipeline.ledger import db
from pipeline.ledger.recorder import SqlRecorder
from pipeline.llm.attempts import Outcome
from pipeline.queue import QueueClient
from pipeline.queue.job import State
from pipeline.redis.connection import connect_redis
from pipeline.redis.keys import Keys
from pipeline.settings import load_settings
from tests.ledger.conftest import BACKENDS, attempt, database_url_for, settle
from tests.support.cli import EXAMPLES, run_cli
from tests.support.emulator import start_emulator
from tests.support.waiting import eventually
from tests.support.workers import WorkerProcess

SPENT = "0.0494782"  # today's spend, paid under another prefix


@pytest.fixture(params=BACKENDS)
def env(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str | None,
    pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis,
) -> Iterator[dict[str, str]]:  # fmt: skip
    """The test's environment, its ledger holding SPENT for today under another prefix."""
    with database_url_for(request.param, tmp_path, postgres_url) as url:
        engine = db.create_ledger_engine(url)
        rec = SqlRecorder(engine, connect_redis(redis_url), Keys("elsewhere"))

        async def seed() -> None:
            call = attempt(job_id="paid-elsewhere", batch_id="other-batch",
                           started_at=datetime.now(UTC))  # fmt: skip
            call.provider = "emulator"
            await rec.started(call)
            await rec.settled(settle(call, Outcome.OK, SPENT))

        asyncio.run(seed())
        engine.dispose()
        yield {**pipeline_env, "PIPELINE_DATABASE_URL": url}


def _day_cell(text: str) -> str:
    """The spent cell of the budgets table's `day` row."""
    row = next(ln for ln in text.splitlines() if re.match(r"[│|]\s*day\s*[│|]", ln))
    return row.split("│" if "│" in row else "|")[2].strip()


def test_status_shows_the_ledgers_day_and_month_under_a_fresh_prefix(
    env: dict[str, str],
) -> None:
    shown = json.loads(run_cli(env, "status", "--json").stdout)["budget"]
    assert shown["day"]["spent_usd"] == "0.049478200", shown
    assert shown["month"]["spent_usd"] == "0.049478200", shown
    assert _day_cell(run_cli(env, "status").stdout) == "0.049478200"


async def test_the_dashboard_and_metrics_show_the_ledgers_day_under_a_fresh_prefix(
    env: dict[str, str], redis_url: str
) -> None:
    from pipeline.api.dashboard.state import dashboard_state
    from pipeline.api.metrics import scrape
    from pipeline.ledger.budget import Budget

    settings = load_settings(key_prefix=env["PIPELINE_KEY_PREFIX"])
    client = QueueClient(connect_redis(redis_url), settings=settings)
    engine = db.create_ledger_engine(env["PIPELINE_DATABASE_URL"])
    try:
        state = await dashboard_state(client, engine, Budget(client.redis, client.keys, settings))
        assert state["budgets"]["day"]["spent_usd"] == "0.049478200", state["budgets"]
        body = (await scrape(client, engine)).decode()
        assert 'pipeline_budget_spent_usd{scope="day"} 0.0494782' in body, body
    finally:
        engine.dispose()
        await client.aclose()


async def test_a_worker_under_a_fresh_prefix_admits_nothing_past_the_day_limit(
    env: dict[str, str], redis_url: str
) -> None:
    prefix = env["PIPELINE_KEY_PREFIX"]
    # A pass of the reconciler ran under this prefix a moment ago (before SPENT was paid):
    # its lock makes the new worker's first periodic pass a no-op for most of a minute.
    keys = Keys(prefix)
    raw = redis.Redis.from_url(redis_url)
    raw.set(keys.ledger_reconcile_lock, "earlier-pass", px=60_000)
    raw.close()
    with start_emulator() as emu:
        run_env = {**env, **emu.env, "GOOGLE_API_KEY": "", "PIPELINE_BUDGET_DAY_USD": "0.05"}
        r = run_cli(run_env, "submit", next(p for p in EXAMPLES if p.endswith("invoice.pdf")),
                    "--json")  # fmt: skip
        assert r.returncode == 0, r.stderr
        job_id = json.loads(r.stdout)["documents"][0]["job_id"]
        client = QueueClient(connect_redis(redis_url), settings=load_settings(key_prefix=prefix))
        worker = WorkerProcess(redis_url, prefix, imports=("tasks.analyze",), **run_env)
        try:
            async def held() -> bool:
                job = await client.get(job_id)
                return job.state == State.SCHEDULED and "day budget" in (job.error or "")

            await eventually(held, 60, "the job to wait for the day budget")
            # $0.0494782 spent + this call's worst case > $0.05: nothing was sent
            assert emu.stats()["generate_requests"] == 0
            assert "$0.049478200 spent" in ((await client.get(job_id)).error or "")
        finally:
            worker.close()
            await client.aclose()
