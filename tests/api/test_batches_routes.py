"""The batch routes over the real app (ASGI in-process), a real Redis and SQLite: batches listed
newest first with paging and filters, results as JSON, JSON Lines and CSV, the budget changed
by PATCH, costs as CSV, the refusals (404, 422), and a cancel that cancels the Gemini batch
job (through the real google-genai client and the emulator)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest

from pipeline.queue.client import QueueClient
from pipeline.redis.connection import connect_redis
from pipeline.services import build_worker
from tests.support.api import api_client, api_settings, pdf_files
from tests.support.emulator import start_emulator
from tests.support.pdfs import make_pdf
from tests.support.waiting import eventually

DOCS = [(f"doc-{i}.pdf", make_pdf(1, f"Invoice {i}, page {{n}}. Amount due 10{i} EUR."))
        for i in range(3)]  # fmt: skip


async def test_list_results_budget_and_costs(
    tmp_path: Path, redis_url: str, key_prefix: str, aredis: object
) -> None:
    import tasks.analyze  # noqa: F401  (registers the tasks for the in-process worker)

    settings = api_settings(tmp_path, redis_url, key_prefix)
    async with api_client(settings) as (client, _):
        ids, jobs = [], []
        for i, doc in enumerate(DOCS):
            r = await client.post("/analyze", files=pdf_files(doc),
                                  data={"label": "even" if i % 2 == 0 else "odd"})  # fmt: skip
            assert r.status_code == 202, r.text
            # who will answer, beside the model the documents are keyed by
            assert r.json()["provider"] == "offline", r.text
            assert r.json()["answered_by"] == "offline analyzer ($0, not Gemini)", r.text
            ids.append(r.json()["batch_id"])
            jobs.append(r.json()["documents"][0]["job_id"])
        qc = QueueClient(connect_redis(redis_url), settings=settings)
        worker = await build_worker(qc, queues=["default"], concurrency=2)
        run = asyncio.create_task(worker.run(install_signals=False))
        try:
            for batch in ids:
                await _until_complete(client, batch)
        finally:
            worker.stop()
            await asyncio.wait_for(run, 30)
            await qc.aclose()

        page = (await client.get("/batches", params={"limit": 2})).json()
        assert [b["batch_id"] for b in page["batches"]] == [ids[2], ids[1]]  # newest first
        assert page["next_offset"] == 2
        rest = (await client.get("/batches", params={"limit": 2, "offset": 2})).json()
        assert [b["batch_id"] for b in rest["batches"]] == [ids[0]] and rest["next_offset"] is None
        beyond = await client.get("/batches", params={"offset": 2**63})  # past SQL's OFFSET
        assert beyond.status_code == 422, beyond.text
        past_the_end = (await client.get("/batches", params={"offset": 10**9})).json()
        assert past_the_end["batches"] == [] and past_the_end["next_offset"] is None
        even = (await client.get("/batches", params={"label": "even"})).json()
        assert {b["batch_id"] for b in even["batches"]} == {ids[0], ids[2]}
        assert all(b["by_state"] == {"complete": 1} for b in even["batches"])
        # a label two batches carry names the newest, and the view says so and how to pick
        shared = (await client.get("/batches/even")).json()
        assert shared["batch_id"] == ids[2] and "names 2 batches" in shared["note"]
        assert ids[0] in shared["note"], shared["note"]
        assert (await client.get(f"/batches/{ids[1]}")).json()["note"] is None
        # a change takes no guess at which batch a shared label meant
        refused = await client.post("/batches/even/cancel")
        assert refused.status_code == 422 and "names 2 batches" in refused.json()["detail"]
        bad = await client.get("/batches", params={"state": "exploded"})
        assert bad.status_code == 422 and "queued" in bad.json()["detail"]

        as_json = await client.get(f"/batches/{ids[0]}/results")
        assert as_json.status_code == 200
        [entry] = as_json.json()
        assert entry["name"] == "doc-0.pdf" and entry["analysis"]["summary"]
        lines = (await client.get(f"/batches/{ids[0]}/results",
                                  params={"format": "jsonl"})).text.splitlines()  # fmt: skip
        assert [json.loads(ln)["name"] for ln in lines] == ["doc-0.pdf"]
        table = await client.get(f"/batches/{ids[0]}/results", params={"format": "csv"})
        assert table.headers["content-type"].startswith("text/csv")
        (row,) = list(csv.DictReader(io.StringIO(table.text)))
        assert row["status"] == "complete" and row["summary"] == entry["analysis"]["summary"]
        # who answered, in every format: the offline analyzer here, never taken for Gemini
        assert entry["provider"] == row["provider"] == "offline"
        assert entry["answering_model"] == row["answering_model"] == "offline"
        assert entry["model"] == row["model"] == settings.model  # what it was submitted for
        assert (await client.get(f"/batches/{ids[0]}/results",
                                 params={"format": "xml"})).status_code == 422  # fmt: skip
        assert (await client.get("/batches/nope/results")).status_code == 404

        patched = await client.patch(f"/batches/{ids[0][:12]}", json={"budget_usd": "2.50"})
        assert patched.status_code == 200 and patched.json()["budget_usd"].startswith("2.5")
        assert (await client.get(f"/batches/{ids[0]}")).json()["budget_usd"].startswith("2.5")
        for wrong in ("-1", "lots", "NaN"):
            r = await client.patch(f"/batches/{ids[0]}", json={"budget_usd": wrong})
            assert r.status_code == 422 and "budget_usd" in r.json()["detail"], wrong
        assert (await client.patch("/batches/nope", json={"budget_usd": "1"})).status_code == 404
        number = await client.patch(f"/batches/{ids[0]}", json={"budget_usd": 5})
        assert number.status_code == 422, number.text  # says how to send it
        assert number.json()["detail"].startswith(
            'budget_usd: send the amount as a JSON string, e.g. {"budget_usd": "5"}')

        by_doc = await client.get("/costs", params={"by": "document", "format": "csv"})
        assert by_doc.status_code == 200 and by_doc.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(by_doc.text)))
        assert {r["name"] for r in rows if r["key"] != "TOTAL"} == {d[0] for d in DOCS}
        named = (await client.get("/costs", params={"by": "document"})).json()
        assert {r["name"] for r in named["rows"]} == {d[0] for d in DOCS}
        late = await client.get("/costs", params={"since": "2026-02-02", "until": "2026-02-01"})
        assert late.status_code == 422 and "since" in late.json()["detail"]

        # a cancel with nothing left to cancel says so, as `pipeline cancel` does, from both
        # doors (the batch's is last: it marks the batch cancelled)
        ended = "nothing to cancel: every job had ended"
        job = await client.post(f"/jobs/{jobs[1]}/cancel")
        assert job.status_code == 200 and job.json()["cancelled"] == 0, job.text
        assert job.json()["message"] == ended, job.text
        batch = await client.post(f"/batches/{ids[1]}/cancel")
        assert batch.status_code == 200 and batch.json()["message"] == ended, batch.text


async def _until_complete(client: object, batch: str, timeout_s: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        r = await client.get(f"/batches/{batch}")  # type: ignore[attr-defined]
        assert r.status_code == 200, r.text
        body = r.json()
        if body["by_state"] == {"complete": 1}:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {batch} not complete: {body}")
        await asyncio.sleep(0.1)


async def test_cancel_route_cancels_the_remote_gemini_batch_job(
    tmp_path: Path, redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POST /batches/{id}/cancel takes every document out of its Gemini batch job and, all of
    them gone, cancels the job at the provider (the emulator's job moves to CANCELLED)."""
    import tasks.analyze  # noqa: F401  (registers the tasks for the in-process worker)

    with start_emulator(batch_delay_s=600, batch_pending_s=0) as emu:
        for name, value in emu.env.items():
            monkeypatch.setenv(name, value)
        settings = api_settings(tmp_path, redis_url, key_prefix, provider="emulator",
                                batch_poll_s=0.3, batch_poll_max_s=1.0)  # fmt: skip
        async with api_client(settings) as (client, _):
            r = await client.post("/analyze", files=pdf_files(*DOCS[:2]), data={"mode": "batch"})
            assert r.status_code == 202, r.text
            batch = r.json()["batch_id"]
            qc = QueueClient(connect_redis(redis_url), settings=settings)
            worker = await build_worker(qc, queues=["default"], concurrency=2)
            run = asyncio.create_task(worker.run(install_signals=False))
            try:
                async def waiting() -> bool:
                    body = (await client.get(f"/batches/{batch}")).json()
                    reasons = [w["reason"] or "" for w in body["waiting"]]
                    return sum(x.startswith("in Gemini batch") for x in reasons) == 2

                await eventually(waiting, 60, "both documents to wait in the Gemini batch")
                done = await client.post(f"/batches/{batch}/cancel")
                view = (await client.get(f"/batches/{batch}")).json()
            finally:
                worker.stop()
                await asyncio.wait_for(run, 30)
                await qc.aclose()
        stats = emu.stats()
    assert done.status_code == 200, done.text
    body = done.json()
    assert len(body["batch_jobs"]) == 1 and body["batch_jobs"][0].startswith("batches/")
    assert stats["batch"]["jobs_created"] == 1 and stats["batch"]["by_state"] == {"CANCELLED": 1}
    assert stats["batch"]["requests"] == 0 and stats["generate_requests"] == 0
    assert view["by_state"] == {"cancelled": 2}
    assert {d["mode"]["shown"] for d in view["documents"]} == {"batch -> cancelled"}
