"""What the product says about a budget is true: the submit-time warning quotes the dry run's
figure for each document and says "will" only when one call's bound alone is above the
budget; `pipeline budget --set` refused says the budget was not changed and what would be
accepted. The real CLI in subprocesses against the emulator (real google-genai client),
Redis and a SQLite ledger."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import redis

from pipeline.llm.pricing import PriceTable
from pipeline.money import dollars, format_usd
from pipeline.settings import load_settings
from tasks.plan import least_call_usd
from tests.support.cli import EXAMPLES, run_cli
from tests.support.emulator import start_emulator


def _dry_run(env: dict[str, str]) -> dict[str, Decimal]:
    """Each document's worst case (USD) by `submit --dry-run`, by file name."""
    r = run_cli(env, "submit", *EXAMPLES, "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    docs = json.loads(r.stdout)["documents"]
    assert {d["token_source"] for d in docs} == {"countTokens"}
    return {d["name"]: Decimal(d["worst_case_usd"]) for d in docs}


def test_the_submit_warning_quotes_the_dry_runs_figures_and_says_will_when_certain(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    with start_emulator() as emu:
        env = {**pipeline_env, **emu.env, "GOOGLE_API_KEY": ""}
        worst = _dry_run(env)
        # Below every document's own bound: each one's reservation is refused outright.
        budget = min(worst.values()) - Decimal("0.00001")
        r = run_cli(env, "submit", *EXAMPLES, "--budget", str(budget), "--json")
    assert r.returncode == 0, r.stderr
    sub = json.loads(r.stdout)
    [warning] = sub["warnings"]
    assert f"{len(EXAMPLES)} documents will end over budget" in warning, warning
    assert "may" not in warning
    for name, usd in list(worst.items())[:3]:  # the dry run's figure, not another "worst case"
        assert f"{name} ({dollars(usd)})" in warning, (name, usd, warning)
    # the real command: this batch, and an amount that admits every one of them
    assert f"`pipeline budget {sub['batch_id'][:12]} --set {sum(worst.values())}`" in warning


def test_a_budget_each_document_fits_but_not_their_sum_says_may(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    with start_emulator() as emu:
        env = {**pipeline_env, **emu.env, "GOOGLE_API_KEY": ""}
        worst = _dry_run(env)
        budget = max(worst.values()) + Decimal("0.001")
        assert budget < sum(worst.values())
        r = run_cli(env, "submit", *EXAMPLES, "--budget", str(budget), "--label", "sum-w",
                    "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    sub = json.loads(r.stdout)
    [warning] = sub["warnings"]
    assert "will" not in warning and "may end over budget" in warning, warning
    assert dollars(sum(worst.values())) in warning
    # by its id, never its label: a label can be shared, or read as another batch's id prefix
    assert f"pipeline budget {sub['batch_id'][:12]} --set" in warning, warning


def test_a_budget_set_below_one_call_says_it_was_not_changed_and_what_would_be_accepted(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    with start_emulator() as emu:
        env = {**pipeline_env, **emu.env, "GOOGLE_API_KEY": ""}
        sub = run_cli(env, "submit", EXAMPLES[0], "--budget", "1", "--label", "tiny", "--json")
        assert sub.returncode == 0, sub.stderr
        low = run_cli(env, "budget", "tiny", "--set", "0.01")
        status = json.loads(run_cli(env, "status", "tiny", "--json").stdout)
    assert low.returncode == 1
    error = " ".join(low.stderr.split())
    assert "nothing was queued" not in error and "--dry-run" not in error, error
    assert "the budget of batch tiny was not changed (still $1.000000000)" in error, error
    least = least_call_usd(PriceTable.load(), load_settings().model, datetime.now(UTC))
    assert f"Give at least {dollars(least)}." in error, error
    assert status["budget_usd"] == "1.000000000"  # and it was not


def test_a_batch_mode_budget_below_the_groups_worst_case_says_every_document_will(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    """In Batch Mode the documents' requests are reserved together, all or none: a budget
    each document fits but the group does not ends every one over budget, and the submit's
    warning and the dry run say "will", with the group's worst case and the amount that
    admits it (the worker's refusal names the same figure)."""
    with start_emulator() as emu:
        env = {**pipeline_env, **emu.env, "GOOGLE_API_KEY": ""}
        r = run_cli(env, "submit", *EXAMPLES, "--dry-run", "--json")
        assert r.returncode == 0, r.stderr
        docs = json.loads(r.stdout)["documents"]
        assert {(d["token_source"], d["calls"]) for d in docs} == {("countTokens", 1)}
        batch_worst = [Decimal(d["worst_case_batch_usd"]) for d in docs]
        group = sum(batch_worst, Decimal(0))  # one request each: the group's worst case
        budget = max(batch_worst) + Decimal("0.00001")
        assert budget < group
        args = ("submit", *EXAMPLES, "--mode", "batch", "--budget", str(budget))
        dry = run_cli(env, *args, "--dry-run", "--json")
        dry_text = run_cli(env, *args, "--dry-run")
        sub = run_cli(env, *args, "--json")
    assert sub.returncode == 0, sub.stderr
    submitted = json.loads(sub.stdout)
    [warning] = submitted["warnings"]
    every = f"all {len(EXAMPLES)} documents will end over budget"
    assert every in warning, warning
    assert "may" not in warning and "some" not in warning, warning
    assert f"worst case {dollars(group)}" in warning, warning
    assert f"`pipeline budget {submitted['batch_id'][:12]} --set {format_usd(group)}`" in (
        warning), warning
    # The dry run agrees, in its JSON and its text.
    assert dry.returncode == 0, dry.stderr
    estimate = json.loads(dry.stdout)
    assert estimate["mode"] == "batch" and estimate["batch_group_over_budget"] is True
    [said] = [w for w in estimate["warnings"] if every in w]
    assert f"worst case {dollars(group)}" in said and f"--budget {format_usd(group)}" in said
    text = " ".join(dry_text.stdout.split())
    assert every in text and "calls past the budget" not in text, text
