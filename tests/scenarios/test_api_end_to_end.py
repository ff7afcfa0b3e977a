"""Done when: PDFs posted to the API are analysed by a `pipeline worker` process through the
real google-genai client against the Gemini emulator, with the ledger in PostgreSQL — every
result present, the ledger's token totals equal to what the emulator billed, nothing sent twice.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from tests.support.api import api_client, api_settings, pdf_files, wait_job_done
from tests.support.backends import fresh_pg_database
from tests.support.emulator import start_emulator
from tests.support.pdfs import make_pdf
from tests.support.workers import WorkerProcess

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def api_database(postgres_url: str) -> contextlib.AbstractContextManager[str]:
    return fresh_pg_database(postgres_url, prefix="api")


async def test_upload_to_ledger_through_worker_emulator_and_postgres(
    tmp_path: Path, redis_url: str, key_prefix: str, postgres_url: str | None, aredis: object
) -> None:
    if postgres_url is None:
        pytest.skip("no PostgreSQL (set PIPELINE_TEST_DATABASE_URL or run one on 127.0.0.1:5432)")
    docs = [
        (f"doc-{i}.pdf", make_pdf(i + 1, f"Document {i}, page {{n}}. Contract terms item {i}."))
        for i in range(3)
    ]
    with api_database(postgres_url) as db_url, start_emulator() as emu:
        # Two "machines" (homes of their own) sharing one document folder, as the README says.
        shared = f"file://{tmp_path / 'shared-documents'}"
        settings = api_settings(tmp_path, redis_url, key_prefix, database_url=db_url,
                                document_store=shared)  # fmt: skip
        env = {
            **emu.env,
            "GOOGLE_API_KEY": "",  # it would win over GEMINI_API_KEY in the SDK
            "PIPELINE_HOME": str(tmp_path / "worker-home"),
            "PIPELINE_DATABASE_URL": db_url,
            "PIPELINE_DOCUMENT_STORE": shared,
        }
        worker = WorkerProcess(
            redis_url, key_prefix, "--concurrency", "4", "--log-level", "WARNING",
            imports=("tasks.analyze",), **env,
        )  # fmt: skip
        try:
            async with api_client(settings) as (client, _):
                r = await client.post(
                    "/analyze",
                    files=pdf_files(*docs),
                    data={"budget": "5"},
                    headers={"Idempotency-Key": "e2e"},
                )
                assert r.status_code == 202, r.text
                body = r.json()
                assert [d["status"] for d in body["documents"]] == ["queued"] * 3
                done = [
                    await wait_job_done(client, d["job_id"], timeout_s=90)
                    for d in body["documents"]
                ]
                replay = await client.post(
                    "/analyze",
                    files=pdf_files(*docs),
                    data={"budget": "5"},
                    headers={"Idempotency-Key": "e2e"},
                )
                # the same answer, each document as it is now: complete
                assert replay.json() == {**body, "documents": [
                    {**d, "status": "complete", "reason": None} for d in body["documents"]]}
                batch = (await client.get(f"/batches/{body['batch_id']}")).json()
                costs = (await client.get("/costs", params={"by": "model"})).json()
        except BaseException:
            print(worker.output())
            raise
        finally:
            worker.close()
        stats = emu.stats()

    for job in done:
        assert job["status"] == "complete", job
        assert job["result"], job
        assert job["cost"]["calls"] >= 1 and float(job["cost"]["cost_usd"]) > 0
    assert batch["by_state"] == {"complete": 3}
    assert batch["budget_usd"].startswith("5")
    assert float(batch["spend_usd"]) > 0

    billed = stats["billed"]
    assert billed, stats
    total = costs["total"]
    assert total["calls"] == sum(m["requests"] for m in billed.values())
    assert total["input_tokens"] == sum(m["input_tokens"] for m in billed.values())
    assert total["output_tokens"] == sum(m["output_tokens"] for m in billed.values())
    assert total["thinking_tokens"] == sum(m["thinking_tokens"] for m in billed.values())
    assert stats["repeats"] == 0 and stats["billed_repeats"] == 0
