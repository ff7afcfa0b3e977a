"""`pipeline status` as a user runs it: the limiter's and the budgets' state, and why a batch's
jobs wait (a real worker process postpones a job for the day budget)."""

from __future__ import annotations

import json

import redis

from pipeline.llm.limiter import Limiter
from pipeline.queue import QueueClient
from pipeline.queue.job import State
from pipeline.redis.connection import connect_redis
from pipeline.settings import load_settings
from tests.support.cli import EXAMPLES, run_cli
from tests.support.emulator import start_emulator
from tests.support.waiting import eventually
from tests.support.workers import WorkerProcess


async def test_status_shows_limiter_budgets_and_jobs_waiting_for_the_day_budget(
    pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis
) -> None:
    prefix = pipeline_env["PIPELINE_KEY_PREFIX"]
    # A billed provider: the offline analyzer reserves nothing, so no budget holds it back.
    emu_ctx = start_emulator()
    emu = emu_ctx.__enter__()
    env = {**pipeline_env, **emu.env, "GOOGLE_API_KEY": "", "PIPELINE_BUDGET_DAY_USD": "0.000001"}
    r = run_cli(env, "submit", EXAMPLES[0], "--json")
    assert r.returncode == 0, r.stderr
    sub = json.loads(r.stdout)
    job_id = sub["documents"][0]["job_id"]

    settings = load_settings(key_prefix=prefix)
    client = QueueClient(connect_redis(redis_url), settings=settings)
    own = ("PIPELINE_REDIS_URL", "PIPELINE_KEY_PREFIX")
    worker = WorkerProcess(redis_url, prefix, imports=("tasks.analyze",),
                           **{k: v for k, v in env.items() if k not in own})  # fmt: skip
    try:
        async def postponed() -> bool:
            job = await client.get(job_id)
            return job.state == State.SCHEDULED and "day budget" in (job.error or "")

        await eventually(postponed, 60, "the job to wait for the day budget")
        # A 429 naming a per-day quota on another model stops it until midnight Pacific.
        await Limiter(client.redis, client.keys, settings).on_rate_limited(
            "gemini-3.5-flash", per_day=True
        )
        assert emu.stats()["generate_requests"] == 0  # refused before anything was sent
    finally:
        worker.close()
        await client.aclose()
        emu_ctx.__exit__(None, None, None)

    one = run_cli(env, "status", sub["batch_id"], "--json")
    assert one.returncode == 0, one.stderr
    waiting = json.loads(one.stdout)["waiting"]
    assert [w["job_id"] for w in waiting] == [job_id]
    assert waiting[0]["kind"] == "budget_window"
    assert waiting[0]["reason"].startswith("waiting for the day budget")
    text = run_cli(env, "status", sub["batch_id"])
    assert "1 job(s) waiting: for the day or month budget window" in text.stdout

    overview = run_cli(env, "status", "--json")
    assert overview.returncode == 0, overview.stderr
    data = json.loads(overview.stdout)
    assert data["budget"]["day"]["limit_usd"] == "0.000001000"  # fixed-point, ledger precision
    assert data["budget"]["day"]["spent_usd"] == "0.000000000"
    by_model = {m["model"]: m for m in data["limiter"]}
    assert by_model["gemini-3.5-flash"]["daily_exhausted_until"] is not None
    assert by_model["gemini-3.5-flash-lite"]["daily_exhausted_until"] is None
    assert by_model["gemini-3.5-flash-lite"]["limits"]["rpm"] == settings.rpm
    table = run_cli(env, "status")
    assert "rate limits" in table.stdout and "budgets" in table.stdout
    assert "gemini-3.5-flash" in table.stdout
