"""What `pipeline submit` refuses, a dry run refuses too, and a budget set later meets the
same floor: the real CLI in a subprocess against the emulator, Redis and a SQLite ledger."""

from __future__ import annotations

import json

import redis

from tests.support.cli import EXAMPLES, run_cli
from tests.support.emulator import start_emulator


def _error(stderr: str) -> str:
    """The refusal's text, whoever printed it (`error: ...` on one line)."""
    line = next(x for x in stderr.splitlines() if x.startswith("error:"))
    return line.removeprefix("error:").removeprefix(" submit would refuse this:").strip()


def test_a_dry_run_is_refused_when_the_submit_would_be(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    doc = EXAMPLES[0]
    with start_emulator() as emu:
        env = {**pipeline_env, **emu.env, "GOOGLE_API_KEY": ""}
        dry = run_cli(env, "submit", doc, "--budget", "0.01", "--dry-run")
        dry_json = run_cli(env, "submit", doc, "--budget", "0.01", "--dry-run", "--json")
        real = run_cli(env, "submit", doc, "--budget", "0.01")
        enough = run_cli(env, "submit", doc, "--budget", "0.0128", "--dry-run")
    assert real.returncode == 1 and "cannot pay for one call" in real.stderr
    assert dry.returncode == 1, dry.stdout
    assert _error(dry.stderr) == _error(real.stderr)  # the same words as the submit's
    assert "worst case" in dry.stdout  # the estimate is still shown
    refusals = json.loads(dry_json.stdout)["refusals"]
    assert dry_json.returncode == 1
    assert [r["error"] for r in refusals] == ["BudgetTooSmall"]
    assert enough.returncode == 0, enough.stderr  # at the floor itself: accepted, as by submit
    assert "submit would refuse" not in enough.stderr
    assert not list(sredis.scan_iter(
        match="{" + env["PIPELINE_KEY_PREFIX"] + "}:job:*", count=1000))


def test_a_dry_run_reports_a_deadline_batch_mode_cannot_meet(
    pipeline_env: dict[str, str],
) -> None:
    args = ("submit", EXAMPLES[0], "--mode", "batch", "--deadline", "1h")
    dry = run_cli(pipeline_env, *args, "--dry-run")
    real = run_cli(pipeline_env, *args)
    assert real.returncode == 1 and "leave Batch Mode" in real.stderr
    assert dry.returncode == 1, dry.stdout
    assert _error(dry.stderr) == _error(real.stderr)


def test_a_budget_set_below_one_call_is_refused_as_at_submit(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    with start_emulator() as emu:
        env = {**pipeline_env, **emu.env, "GOOGLE_API_KEY": ""}
        sub = run_cli(env, "submit", EXAMPLES[0], "--budget", "1", "--label", "r8", "--json")
        assert sub.returncode == 0, sub.stderr
        low = run_cli(env, "budget", "r8", "--set", "0.001")
        ok = run_cli(env, "budget", "r8", "--set", "0.02", "--json")
        refused = run_cli(env, "submit", EXAMPLES[0], "--budget", "0.001")
    assert low.returncode == 1
    assert "cannot pay for one call" in low.stderr
    # the same floor, in the same words, as a submission with that budget
    assert _error(low.stderr).split(";")[0] == _error(refused.stderr).split(";")[0]
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["budget_usd"] == "0.020000000"
