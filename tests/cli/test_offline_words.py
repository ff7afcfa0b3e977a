"""What an offline quick start says about documents and money, as a new user reads it: a scan
nobody read is said to be unread in every view of its batch (not only in `results`), the
offline analyzer's calls are never passed off as LLM calls (`costs`, `submit`'s header), and
`run` says it leaves the private redis-server running, and how to stop it. Real `pipeline`
processes, real Redis and SQLite, the offline analyzer, the real process pool."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from pipeline.redis.server import EmbeddedRedis
from tests.support.api import api_client, api_settings
from tests.support.cli import EXAMPLES, run_cli

SCAN = next(p for p in EXAMPLES if Path(p).name == "scanned_delivery_note.pdf")
INVOICE = next(p for p in EXAMPLES if Path(p).name == "invoice.pdf")
UNREAD = "not read: no text layer (a scan; OCR is not available offline)"


def _row(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if name in line)


async def test_a_scan_nobody_read_says_so_in_every_view_of_its_batch(
    pipeline_env: dict[str, str], sredis: redis.Redis, tmp_path: Path, redis_url: str,
    key_prefix: str,
) -> None:  # fmt: skip
    done = run_cli(pipeline_env, "run", SCAN, INVOICE, timeout_s=180)
    assert done.returncode == 0, done.stdout + done.stderr  # complete: its result is stored
    assert UNREAD in _row(done.stdout, "scanned_delivery_note.json"), done.stdout
    assert "not read" not in _row(done.stdout, "invoice.json")
    batch = next(ln.split()[-1] for ln in done.stdout.splitlines() if ln.startswith("batch id:"))

    st = run_cli(pipeline_env, "status", batch)
    assert st.returncode == 0, st.stderr
    scan = _row(st.stdout, "scanned_delivery_note.pdf")
    assert "complete" in scan and UNREAD in scan, st.stdout
    assert "not read" not in _row(st.stdout, "invoice.pdf")
    assert "complete 2" in st.stdout  # the counts stay the states'
    assert "1 complete document not read, or not all of it: no text layer" in st.stdout

    view = json.loads(run_cli(pipeline_env, "status", batch, "--json").stdout)
    docs = {Path(d["name"]).name: d for d in view["documents"]}
    assert view["by_state"] == {"complete": 2}
    assert docs["scanned_delivery_note.pdf"]["reason"] == UNREAD
    assert docs["invoice.pdf"]["reason"] is None

    async with api_client(api_settings(tmp_path, redis_url, key_prefix)) as (client, _):
        api = (await client.get(f"/batches/{batch}")).json()
        assert {Path(d["name"]).name: d["reason"] for d in api["documents"]} == {
            "scanned_delivery_note.pdf": UNREAD, "invoice.pdf": None}  # fmt: skip
        panels = (await client.get("/dashboard/panels")).text
        assert "1 complete document not read, or not all of it: no text layer" in panels

    costs = run_cli(pipeline_env, "costs")
    assert costs.returncode == 0, costs.stderr
    assert ("of the 2 calls, 2 were the offline analyzer's (no LLM asked, $0.000000000 booked"
            in " ".join(costs.stdout.split())), costs.stdout  # fmt: skip
    as_json = json.loads(run_cli(pipeline_env, "costs", "--format", "json").stdout)
    assert as_json["offline_calls"] == as_json["total"]["calls"] == 2
    assert as_json["offline_usd"] == as_json["total"]["cost_usd"] == "0.000000000"


@pytest.mark.parametrize("provider", ["offline", "auto"])
def test_submit_header_names_the_offline_analyzer(
    pipeline_env: dict[str, str], sredis: redis.Redis, provider: str
) -> None:
    """PIPELINE_PROVIDER=offline, or auto without a key: the header says who will answer."""
    env = {**pipeline_env, "PIPELINE_PROVIDER": provider, "GEMINI_API_KEY": "",
           "GOOGLE_API_KEY": ""}  # fmt: skip
    sub = run_cli(env, "submit", INVOICE)
    assert sub.returncode == 0, sub.stdout + sub.stderr
    header = " ".join(sub.stdout.split("┏")[0].split())
    assert header.startswith("batch ") and "offline analyzer ($0, not Gemini)" in header, header
    assert "gemini-3.5-flash-lite" not in header
    as_json = json.loads(run_cli(env, "submit", INVOICE, "--json").stdout)
    assert as_json["provider"] == "offline"
    assert as_json["answered_by"] == "offline analyzer ($0, not Gemini)"


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A PIPELINE_HOME whose private Redis (if any was started) is stopped afterwards."""
    path = tmp_path / "home"
    yield path
    EmbeddedRedis(path).stop()


def test_run_says_it_leaves_the_private_redis_running_and_how_to_stop_it(home: Path) -> None:
    """`make demo` is `pipeline run examples/docs/*.pdf` with no PIPELINE_REDIS_URL."""
    env = {"PIPELINE_HOME": str(home), "PIPELINE_PROVIDER": "offline",
           "PIPELINE_KEY_PREFIX": "demo-words"}  # no PIPELINE_REDIS_URL: the private server
    done = run_cli(env, "run", INVOICE, cwd=home.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert EmbeddedRedis(home).ping()
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("redis-server is still running (under home/redis, pid "), last
    assert "for `pipeline status` and `pipeline results`" in last
    assert last.endswith("stop it with `pipeline redis stop`"), last
    stop = run_cli(env, "redis", "stop", cwd=home.parent)  # what it says to run
    assert stop.returncode == 0 and not EmbeddedRedis(home).ping()


def test_unread_names_the_pages_when_only_some_had_no_text_layer() -> None:
    """The offline analyzer's record names its blank pages as runs; Gemini's never count
    (it reads such pages as images)."""
    from tasks.batches import DocumentRow
    from tasks.status import DocumentState

    def row(provider: str, blank: list[list[int]], pages: int) -> DocumentRow:
        record = {"produced_by": {"provider": provider}, "pages_without_text": blank,
                  "page_count": pages}  # fmt: skip
        return DocumentRow("d.pdf", "sha", pages, "job", DocumentState("complete"),
                           Decimal(0), Decimal(0), record)  # fmt: skip

    assert row("offline", [[1, 1]], 1).unread == UNREAD
    assert row("offline", [[2, 3]], 5).reason == f"pages 2–3 {UNREAD}"
    assert row("offline", [], 5).reason is None
    assert row("gemini", [[2, 3]], 5).reason is None


def test_costs_by_provider_does_not_suggest_itself(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    """The offline calls' footnote points to `--by provider` only when the rows are not
    already grouped that way."""
    done = run_cli(pipeline_env, "run", INVOICE, timeout_s=180)
    assert done.returncode == 0, done.stdout + done.stderr
    by_day = " ".join(run_cli(pipeline_env, "costs").stdout.split())
    assert "the offline analyzer's" in by_day and "`--by provider` shows them apart" in by_day
    by_provider = run_cli(pipeline_env, "costs", "--by", "provider")
    assert by_provider.returncode == 0, by_provider.stderr
    words = " ".join(by_provider.stdout.split())
    assert "1 was the offline analyzer's" in words, words
    assert "--by provider" not in words, words


def test_costs_by_mode_claims_no_saving_without_batch_calls(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    """Only interactive calls in the range: `--by mode` says there were no Batch Mode calls,
    not that Batch Mode saved $0."""
    done = run_cli(pipeline_env, "run", INVOICE, timeout_s=180)
    assert done.returncode == 0, done.stdout + done.stderr
    by_mode = run_cli(pipeline_env, "costs", "--by", "mode")
    assert by_mode.returncode == 0, by_mode.stderr
    words = " ".join(by_mode.stdout.split())
    assert "interactive" in words and "Batch Mode saved" not in words, words
    assert "no Batch Mode calls in this range" in words, words


def test_results_name_the_model_that_answered(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    """`model` is what a document was submitted for (part of its key); `answering_model`
    who answered it: the offline analyzer here, in the JSON and the CSV alike."""
    done = run_cli(pipeline_env, "run", INVOICE, timeout_s=180)
    assert done.returncode == 0, done.stdout + done.stderr
    batch = next(ln.split()[-1] for ln in done.stdout.splitlines() if ln.startswith("batch id:"))
    [entry] = json.loads(run_cli(pipeline_env, "results", batch, "--format", "json").stdout)
    assert (entry["provider"], entry["answering_model"]) == ("offline", "offline"), entry
    assert entry["analysis"]["produced_by"]["model"] == "offline"
    table = run_cli(pipeline_env, "results", batch, "--format", "csv").stdout
    [row] = list(csv.DictReader(io.StringIO(table)))
    assert (row["provider"], row["answering_model"]) == ("offline", "offline"), row
    assert row["model"] == entry["model"]  # unchanged for those who read it
