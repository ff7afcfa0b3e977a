"""`pipeline submit --dry-run`: tokens counted at the provider (countTokens) when a key is set,
nothing generated, and the local estimate when counting fails."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from pipeline.money import dollars
from tests.support.cli import EXAMPLES, run_cli
from tests.support.emulator import start_emulator


@pytest.fixture
def rehearsal_env(pipeline_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """`pipeline_env` with the emulator as the provider (running for the test): a dry run
    then looks for earlier runs of the provider its figures are for."""
    with start_emulator() as emu:
        yield {**pipeline_env, **emu.env, "GOOGLE_API_KEY": ""}


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
    assert not list(sredis.scan_iter(
        match="{" + env["PIPELINE_KEY_PREFIX"] + "}:job:*", count=1000))

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


def test_a_dry_run_prices_only_what_the_submit_would_pay_for(
    rehearsal_env: dict[str, str], tmp_path: Path
) -> None:
    """A document an earlier run answers (complete, or still queued) is a duplicate the
    submit does not pay for again: the dry run says so with the submit's words, leaves it out
    of the totals, and prices a document whose earlier run ended without a result (it would
    run again) and a new one; the real submit then agrees, document by document."""
    pipeline_env = rehearsal_env
    docs = {Path(p).name: p for p in EXAMPLES}
    done, queued, cancelled, new = (docs[n] for n in (
        "invoice.pdf", "letter_de.pdf", "services_contract.pdf", "account_statement.pdf"))
    assert run_cli(pipeline_env, "run", done).returncode == 0
    assert run_cli(pipeline_env, "submit", queued).returncode == 0  # no worker: stays queued
    sub = run_cli(pipeline_env, "submit", cancelled, "--json")
    assert run_cli(pipeline_env, "cancel", json.loads(sub.stdout)["batch_id"]).returncode == 0
    four = (done, queued, cancelled, new)

    dry = run_cli(pipeline_env, "submit", *four, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    est = json.loads(dry.stdout)
    by_name = {Path(d["name"]).name: d for d in est["documents"]}
    assert by_name["invoice.pdf"]["status"] == "duplicate"
    assert "which has its result: not paid again" in by_name["invoice.pdf"]["reason"]
    assert by_name["letter_de.pdf"]["status"] == "duplicate"
    assert "queued: it runs once, not twice" in by_name["letter_de.pdf"]["reason"]
    again = by_name["services_contract.pdf"]
    assert again["status"] == "ok" and "ended cancelled" in again["reason"], again
    # the cancelled run is named as the earlier one, never as the job that would answer
    assert "job_id" not in again and again["earlier_job_id"] in again["reason"], again
    assert by_name["invoice.pdf"]["job_id"] in by_name["invoice.pdf"]["reason"]
    assert by_name["account_statement.pdf"]["status"] == "ok"
    assert "reason" not in by_name["account_statement.pdf"]
    priced = [by_name["services_contract.pdf"], by_name["account_statement.pdf"]]
    assert Decimal(est["total_worst_case_usd"]) == sum(Decimal(d["worst_case_usd"])
                                                       for d in priced) > 0  # fmt: skip

    table = run_cli({**pipeline_env, "COLUMNS": "250"}, "submit", *four, "--dry-run")
    said = " ".join(table.stdout.split())
    assert "on the emulator (priced, never billed)" in said, said  # as the submit says it
    assert est["provider"] == "emulator"
    assert "duplicate: already submitted (same content as job" in said, said
    assert f"note: {cancelled}: its earlier run" in said, said

    real = run_cli(pipeline_env, "submit", *four, "--json")
    assert real.returncode == 0, real.stderr
    statuses = {Path(d["name"]).name: d["status"] for d in json.loads(real.stdout)["documents"]}
    assert statuses == {"invoice.pdf": "duplicate", "letter_de.pdf": "duplicate",
                        "services_contract.pdf": "queued", "account_statement.pdf": "queued"}


def test_a_dry_run_that_cannot_read_the_queue_says_so_and_starts_nothing(
    pipeline_env: dict[str, str], tmp_path: Path
) -> None:
    """Without PIPELINE_REDIS_URL and with the embedded Redis not running, a dry run does not
    start a server to look: it prices every document and says it did not check."""
    env = {k: v for k, v in pipeline_env.items() if k != "PIPELINE_REDIS_URL"}
    env["PIPELINE_HOME"] = str(tmp_path / "fresh-home")
    dry = run_cli(env, "submit", EXAMPLES[0], "--dry-run")
    assert dry.returncode == 0, dry.stderr
    said = " ".join(dry.stdout.split())
    assert "not checked against earlier submissions" in said, said
    assert not (tmp_path / "fresh-home" / "redis").exists()


def test_a_dry_run_without_the_ledger_database_still_reads_the_queue(
    rehearsal_env: dict[str, str],
) -> None:
    """The ledger database down (or not created yet) is no reason for a dry run to fail:
    it prices, and the queue's job states alone say which documents an earlier run answers
    (as the submit itself reads them when the database cannot say)."""
    pipeline_env = rehearsal_env
    queued, new = EXAMPLES[0], EXAMPLES[1]
    assert run_cli(pipeline_env, "submit", queued).returncode == 0  # no worker: stays queued
    down = {**pipeline_env, "PIPELINE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    dry = run_cli(down, "submit", queued, new, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    statuses = {d["name"]: d["status"] for d in json.loads(dry.stdout)["documents"]}
    assert statuses == {queued: "duplicate", new: "ok"}, statuses


def test_a_dry_run_prices_the_same_content_twice_once_as_the_submit_pays_for_it(
    pipeline_env: dict[str, str], tmp_path: Path
) -> None:
    """Two files with the same bytes in one submission are one run (the second a duplicate
    of the first): the dry run prices one of them, and says what the other is."""
    copy = tmp_path / "a copy.pdf"
    copy.write_bytes(Path(EXAMPLES[0]).read_bytes())
    dry = run_cli(pipeline_env, "submit", EXAMPLES[0], str(copy), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    est = json.loads(dry.stdout)
    first, second = est["documents"]
    assert (first["status"], second["status"]) == ("ok", "duplicate"), est["documents"]
    assert EXAMPLES[0] in second["reason"], second
    assert Decimal(est["total_worst_case_usd"]) == Decimal(first["worst_case_usd"]) > 0
    assert est["total_input_tokens"] == first["input_tokens"]

    real = run_cli(pipeline_env, "submit", EXAMPLES[0], str(copy), "--json")
    assert real.returncode == 0, real.stderr
    assert [d["status"] for d in json.loads(real.stdout)["documents"]] == ["queued", "duplicate"]


def test_a_cancelled_earlier_run_is_said_once_by_the_dry_run_and_the_submit(
    rehearsal_env: dict[str, str],
) -> None:
    """A run cancelled while queued has "cancelled" for its status and its reason: the words
    say "ended cancelled", not "ended cancelled: cancelled"."""
    pipeline_env = rehearsal_env
    doc = EXAMPLES[0]
    sub = run_cli(pipeline_env, "submit", doc, "--json")
    assert run_cli(pipeline_env, "cancel", json.loads(sub.stdout)["batch_id"]).returncode == 0
    dry = run_cli(pipeline_env, "submit", doc, "--dry-run", "--json")
    real = run_cli(pipeline_env, "submit", doc, "--json")
    for said in (dry, real):
        assert said.returncode == 0, said.stderr
        reason = json.loads(said.stdout)["documents"][0]["reason"]
        assert "ended cancelled;" in reason, reason


def test_an_offline_dry_run_prices_what_gemini_would_pay_for(
    pipeline_env: dict[str, str], rehearsal_env: dict[str, str]
) -> None:
    """Offline, the dry run's figures are what Gemini would cost: a document the offline
    analyzer already answered is still priced (a run with a key pays for it), never shown
    as a $0 duplicate of the offline run. And an estimate with nothing to pay says its
    totals at nine decimals, as every amount, not "0"."""
    doc = EXAMPLES[0]
    assert run_cli(pipeline_env, "run", doc).returncode == 0  # answered offline
    offline = json.loads(run_cli(pipeline_env, "submit", doc, "--dry-run", "--json").stdout)
    assert offline["documents"][0]["status"] == "ok", offline["documents"]
    assert (offline["provider"], offline["priced_as"]) == ("offline", "gemini")
    assert Decimal(offline["total_worst_case_usd"]) > 0
    assert run_cli(rehearsal_env, "run", doc).returncode == 0  # answered by the emulator
    answered = run_cli(rehearsal_env, "submit", doc, "--dry-run", "--json")
    est = json.loads(answered.stdout)
    assert est["documents"][0]["status"] == "duplicate", est["documents"]
    assert est["total_worst_case_usd"] == est["total_worst_case_batch_usd"] == "0.000000000"
