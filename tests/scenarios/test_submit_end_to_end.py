"""End to end: `pipeline submit --wait` in a subprocess, two `pipeline worker` processes, the
real google-genai client talking HTTP to the Gemini emulator, SQLite ledger. The ledger must
match what the emulator billed, token for token, and nothing may be paid twice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import redis

from tasks.schema import Analysis
from tests.support.cli import EXAMPLES, run_cli
from tests.support.emulator import start_emulator
from tests.support.workers import WorkerProcess

TOKENS = ("input_tokens", "output_tokens", "thinking_tokens")


@pytest.mark.slow
def test_submit_two_workers_emulator_ledger_matches_billing(
    pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis, tmp_path: Path
) -> None:
    prefix = pipeline_env["PIPELINE_KEY_PREFIX"]
    with start_emulator(latency_s=(0.0, 0.0)) as emu:
        env = {**pipeline_env, **emu.env}
        workers = [WorkerProcess(redis_url, prefix, imports=("tasks.analyze",), **env)
                   for _ in range(2)]  # fmt: skip
        try:
            r = run_cli(env, "submit", *EXAMPLES, "--json", "--wait", "--budget", "5")
            assert r.returncode == 0, r.stdout + r.stderr + workers[0].output()
            sub = json.loads(r.stdout.splitlines()[0])
            batch = sub["batch_id"]
            assert [d["status"] for d in sub["documents"]] == ["queued"] * len(EXAMPLES)

            res = run_cli(env, "results", batch, "--json")
            docs = json.loads(res.stdout)
            assert len(docs) == len(EXAMPLES)
            for doc in docs:
                Analysis.model_validate(doc["analysis"])

            costs = run_cli(env, "costs", "--format", "json")
            assert costs.returncode == 0, costs.stderr
            total = json.loads(costs.stdout)["total"]
            stats = emu.stats()
            billed = {t: sum(row[t] for row in stats["billed"].values()) for t in TOKENS}
            assert billed["input_tokens"] > 0
            assert {t: total[t] for t in TOKENS} == billed
            assert stats["repeats"] == 0 and stats["billed_repeats"] == 0
            assert float(total["cost_usd"]) > 0

            # The same files again, one renamed: same jobs, no new job, no new call.
            renamed = tmp_path / "renamed-copy.pdf"
            shutil.copy(EXAMPLES[0], renamed)
            jobs_before = set(sredis.scan_iter(match="{" + prefix + "}:job:*", count=1000))
            calls_before = stats["generate_requests"]
            again = run_cli(env, "submit", *EXAMPLES[1:], str(renamed), "--json")
            assert again.returncode == 0, again.stderr
            redo = json.loads(again.stdout)["documents"]
            assert {d["status"] for d in redo} == {"duplicate"}
            assert {d["job_id"] for d in redo} == {d["job_id"] for d in sub["documents"]}
            assert set(sredis.scan_iter(match="{" + prefix + "}:job:*", count=1000)) == jobs_before
            assert emu.stats()["generate_requests"] == calls_before
        finally:
            for w in workers:
                w.close()
