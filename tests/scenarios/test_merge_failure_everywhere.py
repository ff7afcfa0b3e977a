"""A long document whose merge fails shows `failed`, with the whole reason, everywhere: the
CLI's status (JSON and text, by id, prefix and label), the API, the dashboard's failures panel,
/metrics and the results export. Real Redis, PostgreSQL, a `pipeline worker` process, the real
google-genai client against the emulator, which refuses every merge call (400)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tasks.prompts import load_prompt
from tests.scenarios.helpers import (
    TWO_PAGES_PER_PART,
    analysis_worker,
    batch_id_of,
    status_json,
)
from tests.support.api import api_client, api_settings
from tests.support.backends import fresh_pg_database
from tests.support.cli import run_cli as cli
from tests.support.emulator import start_emulator
from tests.support.pdfs import make_pdf

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


async def test_a_failed_merge_is_failed_with_its_reason_in_every_view(
    pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis, tmp_path: Path,
    postgres_url: str | None,
) -> None:  # fmt: skip
    if postgres_url is None:
        pytest.skip("no PostgreSQL (set PIPELINE_TEST_DATABASE_URL or run one on 127.0.0.1:5432)")
    long_name = "a-rather-long-file-name-for-the-quarterly-supplier-contract-" + "x" * 60
    pdf = tmp_path / f"{long_name}.pdf"
    pdf.write_bytes(make_pdf(6, "Section {n}. The supplier Acme GmbH delivers goods."))
    merge_marker = load_prompt("reduce").system.strip().splitlines()[0]
    with fresh_pg_database(postgres_url, prefix="merge") as db_url, \
            start_emulator(refuse_text=merge_marker) as emu:  # fmt: skip
        env = {**pipeline_env, **emu.env, "GOOGLE_API_KEY": "", "PIPELINE_DATABASE_URL": db_url,
               "PIPELINE_CONTEXT_BUDGET_TOKENS": TWO_PAGES_PER_PART}  # fmt: skip
        worker = analysis_worker(redis_url, env, "--concurrency", "3")
        try:
            sub = cli(env, "submit", str(pdf), "--wait", "--label", "merge-fails")
        finally:
            worker.close()
        assert sub.returncode == 1, sub.stdout + sub.stderr + worker.output()
        batch = batch_id_of(sub.stdout)
        # Not a terminal: the log names the file in full and gives the whole reason.
        failed_lines = [ln for ln in sub.stdout.splitlines() if ln.startswith(f"{pdf}: failed")]
        assert failed_lines, sub.stdout
        assert "merging the 3 parts failed" in failed_lines[-1]
        assert "Request refused by the emulator" in failed_lines[-1]
        assert emu.stats()["billed"], "the three parts were answered (and paid)"

        data = status_json(env, batch)
        (doc,) = data["documents"]
        assert doc["name"] == str(pdf) and doc["status"] == "failed" and doc["pages"] == 6
        reason = doc["reason"]
        assert reason.startswith("merging the 3 parts failed: ")
        assert "Request refused by the emulator" in reason and merge_marker in reason
        assert doc["result"] is None
        assert data["by_state"] == {"failed": 1} and data["label"] == "merge-fails"
        assert float(doc["cost_usd"]) > 0 and doc["cost_usd"] == data["spend_usd"]
        assert set(data) == {"batch_id", "label", "documents", "by_state", "spend_usd",
                             "held_usd", "budget_usd", "budget_stop", "waiting",
                             "note"}  # fmt: skip
        assert data["note"] is None  # its label names this batch alone
        assert data["budget_stop"] is None  # no overrun stopped its budget
        assert set(doc) == {"name", "document_id", "status", "reason", "pages", "cost_usd",
                            "wasted_usd", "paid_elsewhere_usd", "held_usd", "result",
                            "mode"}  # fmt: skip
        # Found by a 12-character prefix and by label too; the text view keeps the reason whole.
        assert status_json(env, batch[:12])["batch_id"] == batch
        assert status_json(env, "merge-fails")["batch_id"] == batch
        text = cli(env, "status", batch[:12])
        line = next(ln for ln in text.stdout.splitlines() if str(pdf) in ln)
        assert "failed" in line and reason in line
        assert f"pipeline retry {batch[:12]} --failed" in text.stdout

        exported = cli(env, "results", "merge-fails", "--format", "csv")
        assert exported.returncode == 0, exported.stderr
        (row,) = list(csv.DictReader(io.StringIO(exported.stdout)))
        assert (row["name"], row["status"], row["reason"]) == (str(pdf), "failed", reason)

        settings = api_settings(tmp_path, redis_url, env["PIPELINE_KEY_PREFIX"],
                                database_url=db_url)  # fmt: skip
        async with api_client(settings) as (client, _):
            api = (await client.get(f"/batches/{batch}")).json()
            assert api == data
            listed = (await client.get("/batches", params={"state": "failed"})).json()
            assert [b["batch_id"] for b in listed["batches"]] == [batch]
            none = (await client.get("/batches", params={"state": "complete"})).json()
            assert none["batches"] == []
            state = (await client.get("/dashboard/state")).json()
            [failure] = [f for f in state["failures"] if f["kind"] == "document"]
            assert failure["document"] == str(pdf) and failure["error"] == reason
            [row_b] = [b for b in state["batches"] if b["id"] == batch]
            assert row_b["counts"] == {"failed": 1}
            panels = (await client.get("/dashboard/panels")).text
            assert f'data-retry-document="{doc["document_id"]}"' in panels
            metrics = (await client.get("/metrics")).text

            # The panel's Retry: a new run of the document (fresh calls, the current budget).
            url = f"/dashboard/batches/{batch}/retry"
            retry_body = {"document_ids": [doc["document_id"]]}
            assert (await client.post(url, json=retry_body)).status_code == 403  # no header
            retried = await client.post(url, json=retry_body,
                                        headers={"X-Pipeline-Action": "retry"})  # fmt: skip
            assert retried.status_code == 200, retried.text
            [run] = retried.json()["documents"]
            assert run["status"] == "queued" and run["job_id"] != failure["id"]
            after = (await client.get(f"/batches/{batch}")).json()
            assert after["by_state"] == {"waiting": 1}  # no worker runs now: it says so
            again = await client.post(url, json=retry_body, headers={"X-Pipeline-Action": "retry"})
            assert again.status_code == 409
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(metrics) for s in family.samples
        }  # fmt: skip
        assert samples[("pipeline_documents", (("batch", batch), ("state", "failed")))] == 1
