"""`pipeline submit / run / status / results` as a user runs them: real subprocesses, real
Redis and SQLite, the offline analyzer (no key), the real process pool."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import redis

from tasks.schema import Analysis
from tests.support.cli import EXAMPLES, run_cli
from tests.support.pdfs import make_pdf


@pytest.fixture
def env(pipeline_env: dict[str, str], sredis: redis.Redis) -> dict[str, str]:
    # sredis: drops this test's prefix afterwards (subprocesses write under it)
    return dict(pipeline_env)


def test_bad_paths_are_reported_and_nothing_valid_exits_nonzero(
    env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "fake.pdf").write_text("not a pdf at all")
    r = run_cli(env, "submit", str(tmp_path / "missing.pdf"), str(tmp_path / "notes.txt"),
            str(tmp_path / "fake.pdf"), str(tmp_path / "*.nomatch"), "--json")  # fmt: skip
    assert r.returncode == 1, r.stderr
    docs = {d["name"]: d for d in json.loads(r.stdout)["documents"]}
    assert docs[str(tmp_path / "missing.pdf")]["reason"] == "no such file"
    assert docs[str(tmp_path / "notes.txt")]["reason"] == "not a .pdf file"
    assert "is not a PDF" in docs[str(tmp_path / "fake.pdf")]["reason"]
    assert docs[str(tmp_path / "*.nomatch")]["reason"] == "no file matches this pattern"
    assert all(d["job_id"] is None for d in docs.values())
    assert "Traceback" not in r.stderr


def test_unknown_model_is_refused_before_enqueuing(
    env: dict[str, str], sredis: redis.Redis
) -> None:
    r = run_cli(env, "submit", EXAMPLES[0], "--model", "gemini-9-ultra")
    assert r.returncode == 1
    assert "unknown model 'gemini-9-ultra'" in r.stderr
    assert "gemini-3.5-flash-lite" in r.stderr  # the known models are listed
    assert "Traceback" not in r.stderr
    assert not list(sredis.scan_iter(
        match="{" + env["PIPELINE_KEY_PREFIX"] + "}:queue:*", count=1000))


def test_dry_run_estimates_and_enqueues_nothing(env: dict[str, str], sredis: redis.Redis) -> None:
    r = run_cli(env, "submit", *EXAMPLES, "--dry-run", "--budget", "0.000001", "--json")
    assert r.returncode == 0, r.stderr
    est = json.loads(r.stdout)
    ok = [d for d in est["documents"] if d["status"] == "ok"]
    assert len(ok) == len(EXAMPLES)
    assert sum(d["input_tokens"] for d in ok) == est["total_input_tokens"] > 0
    assert all(d["input_tokens"] > d["pages"] * 500 for d in ok)  # 560/page on 3.x models
    text = run_cli(env, "submit", *EXAMPLES, "--dry-run", "--budget", "0.000001")
    assert "total:" in text.stdout and "over the budget" in text.stdout
    # offline here: what Gemini would cost, said to be so, not what this setup would pay
    assert any("offline analyzer at $0" in w for w in est["warnings"])
    assert "the figures below are what Gemini would cost" in text.stdout
    assert not list(sredis.scan_iter(
        match="{" + env["PIPELINE_KEY_PREFIX"] + "}:job:*", count=1000))


def test_run_offline_prints_summary_then_results_out_writes_files(
    env: dict[str, str], tmp_path: Path
) -> None:
    r = run_cli(env, "run", *EXAMPLES, str(tmp_path / "nope.pdf"), "--label", "quick")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no such file" in r.stdout
    rows = [line for line in r.stdout.splitlines() if ".json" in line]  # the summary table
    for name in EXAMPLES:
        assert any(name in row and "complete" in row for row in rows), r.stdout
    batch = r.stdout.split("batch id: ")[1].split()[0]

    out = tmp_path / "out"
    res = run_cli(env, "results", batch, "--out", str(out))
    assert res.returncode == 0, res.stderr
    files = sorted(out.glob("*.json"))
    assert len(files) == len(EXAMPLES)
    for f in files:
        Analysis.model_validate(json.loads(f.read_text())["analysis"])

    st = run_cli(env, "status", batch, "--json")
    assert st.returncode == 0, st.stderr
    summary = json.loads(st.stdout)
    assert summary["by_state"] == {"complete": len(EXAMPLES)}
    assert summary["label"] == "quick"

    # Running again: same jobs (idempotency keys), nothing new to do.
    again = run_cli(env, "submit", *EXAMPLES, "--json")
    assert {d["status"] for d in json.loads(again.stdout)["documents"]} == {"duplicate"}


def test_long_pdf_goes_through_the_chord_into_one_result(
    env: dict[str, str], tmp_path: Path
) -> None:
    pdf = tmp_path / "long.pdf"
    pdf.write_bytes(make_pdf(6, "Section {n}. The supplier Acme GmbH delivers goods."))
    # 2 pages per call at 560 tokens/page plus the 4,096-token prompt allowance.
    env = {**env, "PIPELINE_CONTEXT_BUDGET_TOKENS": str(2 * 560 + 4096 + 10)}
    r = run_cli(env, "run", str(pdf))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "complete (3 parts)" in r.stdout
    batch = r.stdout.split("batch id: ")[1].split()[0]
    res = run_cli(env, "results", batch, "--json")
    docs = json.loads(res.stdout)
    assert len(docs) == 1
    assert docs[0]["provider"] == "offline"  # who answered, beside the analysis
    merged = Analysis.model_validate(docs[0]["analysis"])
    assert merged.page_count == 6


def test_run_ends_with_what_was_found_and_results_prints_the_same(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    docs = [p for p in EXAMPLES if Path(p).name in ("invoice.pdf", "scanned_delivery_note.pdf")]
    done = run_cli(pipeline_env, "run", *docs, timeout_s=180)
    assert done.returncode == 0, done.stdout + done.stderr
    found = done.stdout[done.stdout.index("what was found"):]
    assert "invoice.pdf (1 page): invoice, language en, by offline" in found
    assert "EUR 25,662.35" in found  # the invoice's total, among its top amounts
    assert "No text layer on page 1" in found  # the scan: nothing invented
    batch = next(ln.split()[-1] for ln in done.stdout.splitlines() if ln.startswith("batch id:"))
    again = run_cli(pipeline_env, "results", batch)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == found.strip()


def test_a_submission_whose_every_file_is_refused_names_no_batch(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A truncated PDF is refused at inspection: nothing is queued, and no batch id is
    printed for a batch that was never made."""
    bad = tmp_path / "truncated.pdf"
    bad.write_bytes(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog")
    r = run_cli(env, "submit", str(bad))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "nothing was queued, so no batch was made" in r.stdout
    assert "batch id:" not in r.stdout and "Traceback" not in r.stderr
    # no header names a batch that `pipeline status` would not know
    assert not re.search(r"batch [0-9a-f]{32}", r.stdout), r.stdout
    assert "no batch" in r.stdout.splitlines()[0]
    as_json = run_cli(env, "submit", str(bad), "--json")
    assert json.loads(as_json.stdout)["batch_id"] is None
