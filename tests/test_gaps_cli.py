"""CLI gaps: `submit --dry-run` counting through countTokens when a key is set, and
`pipeline status` showing the limiter and budget state and why a batch's jobs wait."""

from __future__ import annotations

import json
from pathlib import Path

import redis

from tests.llm_helpers import start_emulator
from tests.test_docs_cli import EXAMPLES, cli


def test_dry_run_with_a_key_counts_tokens_at_the_provider_and_generates_nothing(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    with start_emulator() as emu:
        env = {**pipeline_env, **emu.env, "GOOGLE_API_KEY": ""}
        r = cli(env, "submit", *EXAMPLES, "--dry-run", "--json")
        stats = emu.stats()
    assert r.returncode == 0, r.stderr
    est = json.loads(r.stdout)
    ok = [d for d in est["documents"] if d["status"] == "ok"]
    assert len(ok) == len(EXAMPLES)
    assert {d["token_source"] for d in ok} == {"countTokens"}
    # One countTokens request per map call, and not one generateContent.
    assert stats["generate_requests"] == 0
    assert stats["requests_total"] == sum(d["calls"] for d in ok)
    assert stats["by_status"] == {"200": stats["requests_total"]}
    assert sum(d["input_tokens"] for d in ok) == est["total_input_tokens"] > 0
    assert not list(sredis.scan_iter(match="{" + env["PIPELINE_KEY_PREFIX"] + "}:job:*"))

    # Offline (no key): the local estimator, and its figures differ from the counted ones
    # only by what the estimator cannot know, so both are in the same range.
    offline = cli(pipeline_env, "submit", *EXAMPLES, "--dry-run", "--json")
    est_off = json.loads(offline.stdout)
    assert all("token_source" not in d for d in est_off["documents"])
    ratio = est["total_input_tokens"] / est_off["total_input_tokens"]
    assert 0.5 < ratio < 2.0


def test_dry_run_falls_back_to_the_estimate_when_count_tokens_fails(
    pipeline_env: dict[str, str], tmp_path: Path
) -> None:
    with start_emulator(api_keys=("right-key",)) as emu:
        env = {**pipeline_env, **emu.env, "GEMINI_API_KEY": "wrong-key", "GOOGLE_API_KEY": ""}
        r = cli(env, "submit", EXAMPLES[0], "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "countTokens failed" in r.stdout and "local estimate" in r.stdout
    assert "Traceback" not in r.stderr


async def test_status_shows_limiter_budgets_and_jobs_waiting_for_the_day_budget(
    pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis
) -> None:
    from pipeline.llm.limiter import Limiter
    from pipeline.queue import QueueClient
    from pipeline.queue.job import State
    from pipeline.redis.connection import connect_redis
    from pipeline.settings import load_settings
    from tests.queue_helpers import WorkerProcess, eventually

    prefix = pipeline_env["PIPELINE_KEY_PREFIX"]
    # A billed provider: the offline analyzer reserves nothing, so no budget holds it back.
    emu_ctx = start_emulator()
    emu = emu_ctx.__enter__()
    env = {**pipeline_env, **emu.env, "GOOGLE_API_KEY": "", "PIPELINE_BUDGET_DAY_USD": "0.000001"}
    r = cli(env, "submit", EXAMPLES[0], "--json")
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

    one = cli(env, "status", sub["batch_id"], "--json")
    assert one.returncode == 0, one.stderr
    waiting = json.loads(one.stdout)["waiting"]
    assert [w["job_id"] for w in waiting] == [job_id]
    assert waiting[0]["kind"] == "budget_window"
    assert waiting[0]["reason"].startswith("waiting for the day budget")
    text = cli(env, "status", sub["batch_id"])
    assert "1 job(s) waiting: for the day or month budget window" in text.stdout

    overview = cli(env, "status", "--json")
    assert overview.returncode == 0, overview.stderr
    data = json.loads(overview.stdout)
    assert data["budget"]["day"]["limit_usd"] == "0.000001000"  # fixed-point, ledger precision
    assert data["budget"]["day"]["spent_usd"] == "0.000000000"
    by_model = {m["model"]: m for m in data["limiter"]}
    assert by_model["gemini-3.5-flash"]["daily_exhausted_until"] is not None
    assert by_model["gemini-3.5-flash-lite"]["daily_exhausted_until"] is None
    assert by_model["gemini-3.5-flash-lite"]["limits"]["rpm"] == settings.rpm
    table = cli(env, "status")
    assert "rate limits" in table.stdout and "budgets" in table.stdout
    assert "gemini-3.5-flash" in table.stdout
