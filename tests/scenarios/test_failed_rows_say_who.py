"""A document that failed says which provider's call failed, in every form of `pipeline
results` (text, JSON, CSV), taken from its run's ledger rows; one that never reached a
provider says so. The worker's log line for a permanent failure says it will not be retried
and why, instead of an "attempt 1/3" that promises more. Real Redis, SQLite, a `pipeline
worker` process, the real google-genai client against the emulator, which refuses every
analysis call (400)."""

from __future__ import annotations

import csv
import io
import json
import re

import redis

from tasks.prompts import load_prompt
from tests.scenarios.helpers import analysis_worker, batch_id_of
from tests.support.cli import EXAMPLES
from tests.support.cli import run_cli as cli
from tests.support.emulator import start_emulator
from tests.support.waiting import eventually
from tests.support.workers import WorkerProcess

INVOICE, LETTER = EXAMPLES[2], EXAMPLES[3]


async def _logged(worker: WorkerProcess) -> bool:
    return " analyze_document failed in " in worker.output()


async def test_a_failed_document_names_the_provider_that_failed_and_is_not_retried(
    pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis
) -> None:
    assert INVOICE.endswith("invoice.pdf") and LETTER.endswith("letter_de.pdf")
    marker = load_prompt("analyze").system.strip().splitlines()[0]
    with start_emulator(refuse_text=marker) as emu:
        env = {**pipeline_env, **emu.env, "GOOGLE_API_KEY": ""}
        worker = analysis_worker(redis_url, env)
        try:
            sub = cli(env, "submit", INVOICE, "--wait")
            # the log line follows the settlement `--wait` saw: give it a moment
            await eventually(lambda: _logged(worker), 30, "the worker's line for the failure")
            log = worker.output()
        finally:
            worker.close()
        assert sub.returncode == 1, sub.stdout + sub.stderr + log
        assert emu.stats()["generate_requests"] >= 1
    batch = batch_id_of(sub.stdout)

    # The log: the attempt that ended the job says no other follows, and why.
    [line] = [ln for ln in log.splitlines() if " analyze_document failed in " in ln]
    assert re.search(r"\(attempt 1/\d+, not retried: a permanent error \(provider_refused\), "
                     r"the same request would fail again\)", line), line  # fmt: skip
    assert "again in" not in line

    data = json.loads(cli(env, "results", batch, "--json").stdout)
    [doc] = data
    assert doc["status"] == "failed" and doc["analysis"] is None
    assert doc["provider"] == "emulator" and doc["calls"] >= 1
    rows = list(csv.DictReader(io.StringIO(cli(env, "results", batch, "--format", "csv").stdout)))
    assert [(r["status"], r["provider"], r["calls"]) for r in rows] == [
        ("failed", "emulator", str(doc["calls"]))]
    text = cli(env, "results", batch).stdout
    assert f"(provider emulator, {doc['calls']} call" in text, text

    # A document whose run never called a provider (cancelled while queued) says so.
    queued = cli(env, "submit", LETTER, "--json")
    assert queued.returncode == 0, queued.stderr
    other = json.loads(queued.stdout)["batch_id"]
    assert cli(env, "cancel", other).returncode == 0
    [never] = json.loads(cli(env, "results", other, "--json").stdout)
    assert (never["status"], never["provider"], never["calls"]) == ("cancelled", None, 0)
    [row] = list(csv.DictReader(io.StringIO(cli(env, "results", other, "--format", "csv").stdout)))
    assert (row["provider"], row["calls"]) == ("", "0")
    assert "(no provider was called)" in cli(env, "results", other).stdout
