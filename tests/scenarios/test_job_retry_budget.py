"""A job's call retry budget: every call of one job run draws on one budget of provider
attempts, so a job whose provider keeps answering 503 stops early and ends dead with the
provider's own message, instead of retrying each call to its per-call limit."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from pipeline.queue import QueueClient
from pipeline.queue.job import State
from pipeline.redis.connection import connect_redis
from pipeline.settings import load_settings
from tests.support.emulator import start_emulator
from tests.support.paid_workers import enqueue_asks, ledger_calls, llm_env, wait_done, workers


@pytest.mark.slow
async def test_job_whose_calls_keep_getting_503_stops_after_its_retry_budget(
    redis_url: str, key_prefix: str, sredis: redis.Redis, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with start_emulator(fail_rate=1.0, fail_codes=(503,)) as emu:
        env = llm_env(emu, database_url, str(tmp_path / "home"), max_call_attempts_per_job=2)
        settings = load_settings(key_prefix=key_prefix)
        client = QueueClient(connect_redis(redis_url), settings=settings)
        try:
            with workers(redis_url, key_prefix, env, count=1, concurrency=4) as procs:
                ids = await enqueue_asks(client, 1, batch="b-retry")
                (job,) = await wait_done(client, ids, timeout_s=90, procs=procs)
        finally:
            await client.aclose()
        stats = emu.stats()
    # t.ask runs at most 3 times (max_attempts=3); each run may make 2 provider attempts,
    # where the per-call policy alone would have made 5.
    assert job.state == State.DEAD, job.error
    assert job.attempt == 3
    assert stats["generate_requests"] == 3 * 2
    assert job.error is not None
    assert "503 UNAVAILABLE" in job.error and "overloaded" in job.error, job.error
    assert "retry budget" in job.error or "after 2 attempts" in job.error, job.error
    rows = ledger_calls(database_url)
    assert len(rows) == 6 and {r.outcome for r in rows} == {"error"}
