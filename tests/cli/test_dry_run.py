"""`pipeline submit --dry-run`: tokens counted at the provider (countTokens) when a key is set,
nothing generated, and the local estimate when counting fails."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import redis

from pipeline.money import dollars
from tests.support.cli import EXAMPLES, run_cli
from tests.support.emulator import start_emulator


def test_dry_run_with_a_key_counts_tokens_at_the_provider_and_generates_nothing(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    with start_emulator() as emu:
        env = {**pipeline_env, **emu.env, "GOOGLE_API_KEY": ""}
        r = run_cli(env, "submit", *EXAMPLES, "--dry-run", "--json")
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
    offline = run_cli(pipeline_env, "submit", *EXAMPLES, "--dry-run", "--json")
    est_off = json.loads(offline.stdout)
    assert all("token_source" not in d for d in est_off["documents"])
    ratio = est["total_input_tokens"] / est_off["total_input_tokens"]
    assert 0.5 < ratio < 2.0


def test_dry_run_falls_back_to_the_estimate_when_count_tokens_fails(
    pipeline_env: dict[str, str], tmp_path: Path
) -> None:
    with start_emulator(api_keys=("right-key",)) as emu:
        env = {**pipeline_env, **emu.env, "GEMINI_API_KEY": "wrong-key", "GOOGLE_API_KEY": ""}
        r = run_cli(env, "submit", EXAMPLES[0], "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "countTokens failed" in r.stdout and "local estimate" in r.stdout
    assert "Traceback" not in r.stderr


def test_dry_run_shows_each_documents_worst_case_in_both_modes(
    pipeline_env: dict[str, str],
) -> None:
    # A small context budget splits the 40-page report into parts and a merge.
    env = {**pipeline_env, "PIPELINE_CONTEXT_BUDGET_TOKENS": "8000"}
    r = run_cli(env, "submit", *EXAMPLES, "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    est = json.loads(r.stdout)
    ok = [d for d in est["documents"] if d["status"] == "ok"]
    split = [d for d in ok if d["calls"] > 1]
    single = [d for d in ok if d["calls"] == 1]
    assert split and single
    for d in single:  # Batch Mode bills half (config/pricing.toml batch_discount)
        assert abs(Decimal(d["worst_case_batch_usd"]) * 2 - Decimal(d["worst_case_usd"])) <= (
            Decimal("0.000001"))
    for d in split:  # a long PDF's parts are batched, its merge call runs interactively
        interactive, batch = Decimal(d["worst_case_usd"]), Decimal(d["worst_case_batch_usd"])
        assert interactive / 2 < batch < interactive, d
    assert Decimal(est["total_worst_case_usd"]) == sum(Decimal(d["worst_case_usd"]) for d in ok)
    assert Decimal(est["total_worst_case_batch_usd"]) == sum(
        Decimal(d["worst_case_batch_usd"]) for d in ok)
    assert Decimal(est["total_worst_case_batch_usd"]) < Decimal(est["total_worst_case_usd"])

    table = run_cli({**env, "COLUMNS": "200"}, "submit", *EXAMPLES, "--dry-run")
    assert table.returncode == 0, table.stderr
    assert "worst case USD interactive" in table.stdout and "worst case USD batch" in table.stdout
    assert "parts batched, merge interactive" in table.stdout
    total = dollars(Decimal(est["total_worst_case_batch_usd"]))
    assert f"{total} in Batch Mode" in table.stdout, table.stdout


def test_an_offline_dry_run_says_of_the_budget_what_the_submit_would(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    """The offline analyzer costs $0 and a submit holds it to no budget: its dry run warns of
    no refusal, though Gemini's worst case it shows is over the budget."""
    invoice = next(p for p in EXAMPLES if Path(p).name == "invoice.pdf")
    dry = run_cli(pipeline_env, "submit", invoice, "--budget", "0.0001", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    said = " ".join((dry.stdout + dry.stderr).split())
    assert "refused" not in said.split("(with Gemini")[0], said
    assert "over the budget $0.0001" in said and "the offline analyzer ($0)" in said, said
    assert "PIPELINE_PROVIDER=offline: a run now would use the offline analyzer" in said, said
    real = run_cli(pipeline_env, "submit", invoice, "--budget", "0.0001")
    assert real.returncode == 0, real.stdout + real.stderr
    assert "budget" not in real.stdout + real.stderr, real.stdout + real.stderr
