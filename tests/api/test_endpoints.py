"""The HTTP API against a real Redis and SQLite: upload to result, idempotent replays, the
refusals (413 while streaming, 415, 422, 401), reads, costs and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.ledger.db import get_engine, session_factory
from pipeline.ledger.report import cost_report
from pipeline.queue.client import QueueClient
from pipeline.redis.connection import connect_redis
from pipeline.redis.keys import Keys
from pipeline.services import build_worker
from tests.support.api import api_client, api_settings, pdf_files, wait_job_done
from tests.support.pdfs import make_pdf

PDF_A = make_pdf(2, "Quarterly report {n}. Revenue grew by ten percent in the north region.")
PDF_B = make_pdf(1, "Invoice {n}. Amount due: 1200 EUR, payable within 30 days.")


async def _job_keys(redis_url: str, prefix: str) -> list[str]:
    r = connect_redis(redis_url)
    try:
        return [k async for k in r.scan_iter(match=Keys(prefix).job("*"), count=1000)]
    finally:
        await r.aclose()


async def test_upload_is_analysed_and_readable(
    tmp_path: Path, redis_url: str, key_prefix: str, aredis: object
) -> None:
    import tasks.analyze  # noqa: F401  (registers analyze_document for the worker)

    settings = api_settings(tmp_path, redis_url, key_prefix)
    async with api_client(settings) as (client, _):
        r = await client.post(
            "/analyze",
            files=pdf_files(("a.pdf", PDF_A), ("b.pdf", PDF_B)),
            data={"label": "q3", "priority": "high", "budget": "2.50"},
        )
        assert r.status_code == 202, r.text
        body = r.json()
        assert [d["name"] for d in body["documents"]] == ["a.pdf", "b.pdf"]
        assert all(d["status"] == "queued" for d in body["documents"])
        assert all(d["status_url"] == f"/jobs/{d['job_id']}" for d in body["documents"])

        waiting = (await client.get(body["documents"][0]["status_url"])).json()
        # how many attempts it gets is the claiming worker's to say: unknown, not 0, yet
        assert (waiting["attempts"], waiting["max_attempts"]) == (0, None), waiting
        queued = (await client.get(f"/batches/{body['batch_id']}")).json()
        assert queued["label"] == "q3" and len(queued["documents"]) == 2
        assert queued["budget_usd"].startswith("2.5")

        qc = QueueClient(connect_redis(redis_url), settings=settings)
        worker = await build_worker(qc, queues=["default"], concurrency=2)
        run = asyncio.create_task(worker.run(install_signals=False))
        try:
            done = [await wait_job_done(client, d["job_id"]) for d in body["documents"]]
        finally:
            worker.stop()
            await asyncio.wait_for(run, 30)
            await qc.aclose()
        for job in done:
            assert job["status"] == "complete", job
            assert job["result"], job
            assert job["batch_id"] == body["batch_id"]
            assert job["attempts"] == 1 and job["max_attempts"] >= 1
            assert job["cost"]["calls"] >= 1
            assert Decimal(job["cost"]["cost_usd"]) == 0  # the offline analyzer is free

        batch = (await client.get(f"/batches/{body['batch_id']}")).json()
        assert batch["by_state"] == {"complete": 2}
        assert {d["name"] for d in batch["documents"]} == {"a.pdf", "b.pdf"}

        costs = await client.get("/costs", params={"by": "batch"})
        assert costs.status_code == 200
        engine = get_engine(settings)
        try:
            with session_factory(engine)() as session:
                assert costs.json() == cost_report(session, None, None, "batch")
        finally:
            engine.dispose()
        assert costs.json()["total"]["calls"] >= 2


async def test_idempotency_key_replays_the_same_answer(
    tmp_path: Path, redis_url: str, key_prefix: str, aredis: object
) -> None:
    settings = api_settings(tmp_path, redis_url, key_prefix)
    async with api_client(settings) as (client, _):
        headers = {"Idempotency-Key": "upload-42"}
        first = await client.post("/analyze", files=pdf_files(("a.pdf", PDF_A)), headers=headers)
        assert first.status_code == 202, first.text
        jobs_after_first = await _job_keys(redis_url, key_prefix)
        again = await client.post("/analyze", files=pdf_files(("a.pdf", PDF_A)), headers=headers)
        assert again.status_code == 202
        # the same answer, each document's state as it is now: no worker serves the queue
        now = (await client.get(f"/batches/{first.json()['batch_id']}")).json()["documents"]
        assert again.json() == {**first.json(), "documents": [
            {**d, "status": n["status"], "reason": n["reason"]}
            for d, n in zip(first.json()["documents"], now, strict=True)]}  # fmt: skip
        assert [d["status"] for d in again.json()["documents"]] == ["waiting"]
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert await _job_keys(redis_url, key_prefix) == jobs_after_first

        other = await client.post("/analyze", files=pdf_files(("b.pdf", PDF_B)), headers=headers)
        assert other.status_code == 422
        assert "Idempotency-Key" in other.json()["detail"]
        assert await _job_keys(redis_url, key_prefix) == jobs_after_first
        stored = await aredis.get(Keys(key_prefix).custom("api-idem", "upload-42"))  # type: ignore[attr-defined]
        assert stored is not None and '"done"' in stored

        # every file refused: 422 with each one's reason, nothing queued, the key not used up
        broken = b"%PDF-1.4\nnot really a PDF\n"
        headers = {"Idempotency-Key": "upload-43"}
        none = await client.post("/analyze", files=pdf_files(("x.pdf", broken)), headers=headers)
        assert none.status_code == 422 and none.json()["batch_id"] is None, none.text
        assert none.json()["documents"][0]["status"] == "skipped", none.text
        assert "the file could not be queued" in none.json()["detail"], none.text
        assert await _job_keys(redis_url, key_prefix) == jobs_after_first
        fixed = await client.post("/analyze", files=pdf_files(("b.pdf", PDF_B)), headers=headers)
        assert fixed.status_code == 202 and fixed.json()["batch_id"], fixed.text


async def test_an_idempotent_replay_reports_each_documents_state_now(
    tmp_path: Path, redis_url: str, key_prefix: str, aredis: object
) -> None:
    """A replay after the documents finished says they are complete, as GET /batches/{id}
    does, not "queued" as they were when the first answer was given (found by a fresh-user
    trial)."""
    import tasks.analyze  # noqa: F401  (registers analyze_document for the worker)

    settings = api_settings(tmp_path, redis_url, key_prefix)
    files = pdf_files(("a.pdf", PDF_A), ("b.pdf", PDF_B))
    headers = {"Idempotency-Key": "upload-43"}
    async with api_client(settings) as (client, _):
        first = (await client.post("/analyze", files=files, headers=headers)).json()
        assert [d["status"] for d in first["documents"]] == ["queued", "queued"]
        qc = QueueClient(connect_redis(redis_url), settings=settings)
        worker = await build_worker(qc, queues=["default"], concurrency=2)
        run = asyncio.create_task(worker.run(install_signals=False))
        try:
            for d in first["documents"]:
                await wait_job_done(client, d["job_id"])
        finally:
            worker.stop()
            await asyncio.wait_for(run, 30)
            await qc.aclose()
        batch = (await client.get(f"/batches/{first['batch_id']}")).json()
        again = await client.post("/analyze", files=files, headers=headers)
        assert again.status_code == 202 and again.headers.get("Idempotent-Replayed") == "true"
        replay = again.json()
    assert replay["batch_id"] == first["batch_id"]
    now = {d["name"]: (d["status"], d["reason"]) for d in batch["documents"]}
    assert now == {"a.pdf": ("complete", None), "b.pdf": ("complete", None)}, batch
    assert {d["name"]: (d["status"], d["reason"]) for d in replay["documents"]} == now
    assert [d["job_id"] for d in replay["documents"]] == [d["job_id"] for d in
                                                          first["documents"]]  # fmt: skip


async def test_over_limit_upload_is_refused_while_streaming(
    tmp_path: Path, redis_url: str, key_prefix: str, aredis: object
) -> None:
    limit = 64 * 1024
    settings = api_settings(tmp_path, redis_url, key_prefix, max_upload_bytes=limit)
    async with api_client(settings) as (client, _):
        # Declared too large: refused from Content-Length alone.
        big = b"%PDF-1.4\n" + b"0" * (limit * 2)
        r = await client.post("/analyze", files=pdf_files(("big.pdf", big)))
        assert r.status_code == 413
        assert "limit" in r.json()["detail"]

        # No Content-Length (chunked): the server must stop pulling chunks soon past the limit.
        chunk, chunks_total = 16 * 1024, 200
        pulled = 0

        async def body() -> AsyncIterator[bytes]:
            nonlocal pulled
            head = (
                b'--XyZ\r\nContent-Disposition: form-data; name="files"; filename="big.pdf"'
                b"\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.4\n"
            )
            pulled += 1
            yield head
            for _ in range(chunks_total):
                pulled += 1
                yield b"0" * chunk
            yield b"\r\n--XyZ--\r\n"

        r = await client.post(
            "/analyze",
            content=body(),
            headers={"Content-Type": "multipart/form-data; boundary=XyZ"},
        )
        assert r.status_code == 413, r.text
        assert pulled <= limit // chunk + 3, f"server read {pulled} of {chunks_total} chunks"
        assert await _job_keys(redis_url, key_prefix) == []


async def test_not_a_pdf_is_415(
    tmp_path: Path, redis_url: str, key_prefix: str, aredis: object
) -> None:
    settings = api_settings(tmp_path, redis_url, key_prefix)
    async with api_client(settings) as (client, _):
        r = await client.post(
            "/analyze", files=pdf_files(("a.pdf", PDF_A), ("notes.pdf", b"just some text"))
        )
        assert r.status_code == 415
        assert "notes.pdf" in r.json()["detail"] and "not a PDF" in r.json()["detail"]
        r = await client.post("/analyze", json={"files": ["x"]})
        assert r.status_code == 415
        assert "multipart/form-data" in r.json()["detail"]
        assert await _job_keys(redis_url, key_prefix) == []


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"priority": "urgent"}, "priority"),
        ({"priority": "12"}, "priority"),
        ({"budget": "-1"}, "budget"),
        ({"budget": "lots"}, "budget"),
        ({"budget": "NaN"}, "budget"),
        ({"model": "gpt-9-imaginary"}, "model"),
        ({"colour": "blue"}, "colour"),
    ],
)
async def test_bad_fields_are_422_naming_the_field(
    tmp_path: Path,
    redis_url: str,
    key_prefix: str,
    aredis: object,
    data: dict[str, str],
    field: str,
) -> None:
    settings = api_settings(tmp_path, redis_url, key_prefix)
    async with api_client(settings) as (client, _):
        r = await client.post("/analyze", files=pdf_files(("a.pdf", PDF_A)), data=data)
        assert r.status_code == 422, r.text
        assert field in r.json()["detail"]
        assert await _job_keys(redis_url, key_prefix) == []


async def test_reads_and_bad_queries(
    tmp_path: Path, redis_url: str, key_prefix: str, aredis: object
) -> None:
    settings = api_settings(tmp_path, redis_url, key_prefix)
    async with api_client(settings) as (client, _):
        r = await client.post("/analyze", data={"label": "empty"}, files={"x": ("", b"")})
        assert r.status_code == 422
        r = await client.get("/jobs/nope")
        assert r.status_code == 404 and "no job" in r.json()["detail"]
        r = await client.get("/batches/nope")
        assert r.status_code == 404 and "batch_id" in r.json()["detail"]
        r = await client.get("/costs", params={"by": "colour"})
        assert r.status_code == 422 and "colour" in r.json()["detail"]
        r = await client.get("/costs", params={"since": "last tuesday"})
        assert r.status_code == 422 and "YYYY-MM-DD" in r.json()["detail"]
        r = await client.get("/costs", params={"since": "2020-01-01", "until": "2020-01-02"})
        assert r.status_code == 200 and r.json()["total"]["calls"] == 0
        health = await client.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "redis": "ok", "database": "ok", "ledger": "ok"}


async def test_api_keys_guard_every_route_but_healthz(
    tmp_path: Path, redis_url: str, key_prefix: str, aredis: object
) -> None:
    settings = api_settings(
        tmp_path, redis_url, key_prefix, api_keys="key-one-01234567, key-two-01234567"
    )
    async with api_client(settings) as (anon, _):
        guarded = ["/jobs/x", "/batches/x", "/costs", "/metrics", "/openapi.json", "/docs"]
        for method, path in [*(("GET", p) for p in guarded), ("POST", "/analyze")]:
            r = await anon.request(method, path)
            assert r.status_code == 401, (path, r.status_code)
            assert "PIPELINE_API_KEYS" in r.json()["detail"]
            assert r.headers["WWW-Authenticate"] == "Bearer"
        assert (await anon.get("/healthz")).status_code == 200
        bad = await anon.get("/jobs/x", headers={"Authorization": "Bearer key-three-0123456"})
        assert bad.status_code == 401
    async with api_client(settings, api_key="key-two-01234567") as (client, _):
        assert (await client.get("/jobs/x")).status_code == 404
        r = await client.post("/analyze", files=pdf_files(("a.pdf", PDF_A)))
        assert r.status_code == 202


async def test_metrics_parse_and_count_the_queue(
    tmp_path: Path, redis_url: str, key_prefix: str, aredis: object
) -> None:
    settings = api_settings(tmp_path, redis_url, key_prefix)
    async with api_client(settings) as (client, _):
        r = await client.post("/analyze", files=pdf_files(("a.pdf", PDF_A), ("b.pdf", PDF_B)))
        assert r.status_code == 202
        m = await client.get("/metrics")
        assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(m.text)
            for s in family.samples
        }
    assert samples[("pipeline_queue_depth", (("queue", "default"),))] == 2
    assert samples[("pipeline_jobs", (("queue", "default"), ("state", "queued")))] == 2
    assert samples[("pipeline_dead_letter_jobs", ())] == 0
    assert samples[("pipeline_workers_alive", ())] == 0
    assert samples[("pipeline_jobs_scan_truncated", ())] == 0


async def test_healthz_reports_redis_down(tmp_path: Path, key_prefix: str) -> None:
    settings = api_settings(tmp_path, "redis://127.0.0.1:1/0", key_prefix)
    async with api_client(settings) as (client, _):
        r = await client.get("/healthz")
    assert r.status_code == 503
    assert r.json()["redis"].startswith("down") and r.json()["database"] == "ok"
