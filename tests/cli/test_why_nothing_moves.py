"""`submit --wait` and `run` say within seconds why nothing moves: no live worker serves the
queue, the provider cannot be reached (the whole reason), the model's daily quota is spent
(until when). Real Redis and SQLite, `pipeline` processes, a worker process where one runs."""

from __future__ import annotations

import signal

import redis

from pipeline.llm.limiter import Limiter
from pipeline.queue import QueueClient
from pipeline.redis.connection import connect_redis
from pipeline.settings import get_settings
from tests.scenarios.helpers import CliProcess, analysis_worker
from tests.support.backends import free_port
from tests.support.cli import EXAMPLES, run_cli
from tests.support.emulator import start_emulator


def test_submit_wait_says_no_worker_then_finishes_when_one_starts(
    pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis
) -> None:
    waiting = CliProcess(pipeline_env, "submit", EXAMPLES[0], "--wait")
    worker = None
    try:
        line = waiting.wait_for(lambda ln: "no live worker" in ln, 30, "saying no worker runs")
        assert line == (f"{EXAMPLES[0]}: waiting — no live worker serves queue 'default'; "
                        "start one with `pipeline worker`")  # fmt: skip
        worker = analysis_worker(redis_url, pipeline_env)
        assert waiting.finish(90) == 0, waiting.output
        assert f"{EXAMPLES[0]}: complete" in waiting.lines
    finally:
        waiting.kill()
        if worker is not None:
            worker.close()


def test_run_says_at_once_when_the_emulator_cannot_be_reached(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {**pipeline_env, "PIPELINE_PROVIDER": "emulator", "GOOGLE_GEMINI_BASE_URL": url,
           "GEMINI_API_KEY": "emulator-key", "GOOGLE_API_KEY": "",
           "PIPELINE_SHUTDOWN_GRACE_S": "1"}  # fmt: skip
    run = CliProcess(env, "run", EXAMPLES[0])
    try:
        line = run.wait_for(lambda ln: ln.startswith("provider: "), 30, "about the provider")
        assert line == (
            f"provider: cannot reach the Gemini emulator (PIPELINE_PROVIDER=emulator) at {url}: "
            "ConnectError: All connection attempts failed; its jobs wait and retry with back-off "
            "until it answers (start it, or fix GOOGLE_GEMINI_BASE_URL / PIPELINE_PROVIDER)"
        )
        # The calls' own error follows, whole, while the job backs off and retries (from the
        # ledger's last failed call, or, when no call could start - the token count before it
        # failed too - from the job's own attempt).
        failed = run.wait_for(lambda ln: "could not reach Gemini" in ln, 90, "with the error")
        assert "ConnectError('All connection attempts failed')" in failed, failed
        whole = failed.endswith(("backs off and retries)", "retry later"))
        assert whole or "next attempt" in failed, failed
        run.proc.send_signal(signal.SIGINT)
        assert run.finish(60) == 130, run.output
    finally:
        run.kill()


async def test_submit_wait_says_the_daily_quota_is_spent_until_when(
    pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis
) -> None:
    settings = get_settings()
    client = QueueClient(connect_redis(redis_url), settings=settings)
    await Limiter(client.redis, client.keys, settings).on_rate_limited(settings.model, per_day=True)
    until = (await Limiter(client.redis, client.keys, settings).state(settings.model))[
        "daily_exhausted_until"]  # fmt: skip
    await client.aclose()
    # A provider whose quota it is (the emulator standing for Gemini): nothing is sent.
    with start_emulator() as emu:
        env = {**pipeline_env, **emu.env, "GOOGLE_API_KEY": ""}
        worker = analysis_worker(redis_url, env)
        waiting = CliProcess(env, "submit", EXAMPLES[0], "--wait")
        try:
            line = waiting.wait_for(lambda ln: "daily quota" in ln, 30, "about the daily quota")
            assert line == (f"{EXAMPLES[0]}: waiting — {settings.model}: the provider's daily "
                            f"quota is used up until {until}")  # fmt: skip
            assert emu.stats()["generate_requests"] == 0
        finally:
            waiting.kill()
            worker.close()
    # The offline analyzer spends none of that quota, so none of it holds it back.
    offline = run_cli(pipeline_env, "run", EXAMPLES[1], timeout_s=60)
    assert offline.returncode == 0, offline.stderr
