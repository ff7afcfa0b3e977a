"""`pipeline status` as a user runs it: the limiter's and the budgets' state, and why a batch's
jobs wait (a real worker process postpones a job for the day budget)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

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
    worker = WorkerProcess(redis_url, prefix, imports=("tasks.analyze",), **env)
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
    reason = waiting[0]["reason"]
    assert reason.startswith("waiting for the day budget")
    # Every amount in the reason is printed one way: fixed-point at the ledger's precision.
    amounts = re.findall(r"\$[0-9][0-9.,]*[0-9]", reason)
    assert len(amounts) >= 3 and all(re.fullmatch(r"\$\d+\.\d{9}", a) for a in amounts), reason
    assert "> limit $0.000001000" in reason
    # What it says about when it tries again is when the job is scheduled to.
    said = re.search(r"the job tries again (?:at|when the window turns, at) "
                     r"(\d{4}-\d\d-\d\d \d\d:\d\d(?::\d\d)?) UTC", reason)  # fmt: skip
    assert said, reason
    at = datetime.fromisoformat(said.group(1)).replace(tzinfo=UTC)
    assert abs((datetime.fromisoformat(waiting[0]["until"]) - at).total_seconds()) <= 60, (
        reason, waiting[0]["until"])
    text = run_cli(env, "status", sub["batch_id"])
    assert "1 job waiting: for the day or month budget window" in text.stdout
    assert " · 1 document · " in text.stdout and "1 documents" not in text.stdout

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


def test_the_budget_window_wait_says_when_the_job_tries_again() -> None:
    """Within the last hour of the day the job waits for the turn; earlier it looks again
    hourly (a raised limit is noticed), and the words say so, with both times."""
    from pipeline.failure_policy import WINDOW_RECHECK_S, window_wait

    late = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
    assert window_wait("day", late) == (
        1800.0, "the job tries again when the window turns, at 2026-12-01 00:00 UTC")
    early = datetime(2026, 11, 30, 10, 15, 30, tzinfo=UTC)
    delay_s, words = window_wait("day", early)
    assert delay_s == WINDOW_RECHECK_S == 3600.0
    assert words.startswith("the job tries again at 2026-11-30 11:15:30 UTC, then every 1 h "
                            "until the window turns at 2026-12-01 00:00 UTC")  # fmt: skip
    assert window_wait("month", early)[1].endswith(
        "until the window turns at 2026-12-01 00:00 UTC (a raised limit is noticed at the "
        "next try)")


def test_offline_runs_take_no_gemini_quota_and_the_limits_panel_says_used_and_left(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    """`make demo`'s run (offline, no key) reaches no provider: no Gemini request is counted
    for today or the minute, no bucket is written, and the panel's columns say which numbers
    are quota used and which are what may start now (full when idle)."""
    prefix = pipeline_env["PIPELINE_KEY_PREFIX"]
    r = run_cli(pipeline_env, "run", *EXAMPLES[:2])
    assert r.returncode == 0, r.stderr
    assert not list(sredis.scan_iter(match="{" + prefix + "}*bucket*", count=1000))
    data = json.loads(run_cli(pipeline_env, "status", "--json").stdout)
    settings = load_settings(key_prefix=prefix)
    [lite] = [m for m in data["limiter"] if m["model"] == settings.model]
    assert lite["requests_today"] == 0 and lite["requests_in_window"] == 0, lite
    assert lite["in_flight"] == 0 and lite["requests_left"] == lite["requests_burst"] > 0, lite
    text = run_cli(pipeline_env, "status", columns=240).stdout
    for header in ("requests used / limit (last minute)", "requests used / limit (today)",
                   "start now: requests · tokens"):  # fmt: skip
        assert header in text, text
    row = next(line for line in text.splitlines() if settings.model in line)
    lim = lite["limits"]
    assert f"0 / {lim['rpm']}" in row and f"0 / {lim['rpd']}" in row, row
    burst = f"{lite['requests_burst']:.0f} of {lite['requests_burst']:.0f}"
    assert burst in row and "idle, it is full" in text, text


def test_status_json_mode_has_the_keys_the_readme_lists(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    """Each document's `mode` object carries every key README.md names for it, `left` null
    for a document that never left a Gemini batch job."""
    from tests.support import ROOT

    listed = re.search(r'`"mode": \{([^}]*)\}`', (ROOT / "README.md").read_text())
    assert listed is not None
    keys = {k.strip().strip('"') for k in listed.group(1).split(",")}
    invoice = next(p for p in EXAMPLES if p.endswith("invoice.pdf"))
    done = run_cli(pipeline_env, "run", invoice, timeout_s=180)
    assert done.returncode == 0, done.stdout + done.stderr
    batch = next(ln.split()[-1] for ln in done.stdout.splitlines() if ln.startswith("batch id:"))
    view = json.loads(run_cli(pipeline_env, "status", batch, "--json").stdout)
    [doc] = view["documents"]
    assert set(doc["mode"]) == keys, doc["mode"]
    assert doc["mode"]["left"] is None and doc["mode"]["shown"] == "interactive", doc["mode"]
