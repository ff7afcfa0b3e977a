"""The S3 document store (pipeline/storage/s3.py) against a real S3 HTTP server: moto's server
in a subprocess (tests/support/s3_server.py), reached by the real boto3 client over HTTP.
Not AWS itself and not MinIO: what this proves is our use of the S3 API.

Real Redis, a SQLite ledger, in-process workers with the offline analyzer; the two-machine
case runs `pipeline submit` and `pipeline worker` as processes with homes of their own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from pipeline.errors import DocumentMissing, DocumentStoreError
from pipeline.queue.client import QueueClient
from pipeline.queue.job import State
from pipeline.redis.connection import connect_redis
from pipeline.settings import get_settings
from pipeline.storage import DocumentStore, local, open_store
from pipeline.storage.holds import document_hooks
from pipeline.storage.s3 import S3Store
from tasks.submission import Upload, submit_uploads
from tests.documents.conftest import S3, assert_no_pdf_bytes_in_redis, run_until_done
from tests.support.api import api_client, api_settings, pdf_files
from tests.support.cli import run_cli
from tests.support.pdfs import make_pdf
from tests.support.waiting import until
from tests.support.workers import WorkerProcess


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the backend alone -----------------------------------------------------------------------
def test_put_get_delete_through_the_s3_api(s3: S3) -> None:
    prefix = get_settings().key_prefix
    store: DocumentStore = open_store(get_settings())
    assert store.where == f"{s3.url}/{prefix} ({s3.endpoint})"  # the key prefix's own part
    data = make_pdf(3)
    sha = _sha(data)
    assert not store.exists(sha)
    with ThreadPoolExecutor(8) as pool:  # concurrent puts of the same content are harmless
        list(pool.map(lambda _: store.put(sha, data), range(16)))
    assert s3.names() == [f"docs/{prefix}/{sha}"]  # one object, under the key prefix
    assert s3.client.get_object(Bucket=s3.bucket, Key=f"docs/{prefix}/{sha}")["Body"].read() == data
    assert store.exists(sha) and store.get(sha) == data
    assert store.local_path(sha) is None  # readers get a copy (pipeline/storage/local.py)
    store.delete(sha)
    store.delete(sha)  # absent is fine
    assert s3.names() == [] and not store.exists(sha)
    with pytest.raises(DocumentMissing) as missing:
        store.get(sha)
    assert f"is not in the store at {store.where}" in str(missing.value)
    with pytest.raises(DocumentStoreError):
        store.put("../../etc/passwd", b"x")


def test_the_sweep_removes_old_documents_and_nothing_else_in_the_bucket(
    s3: S3, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PIPELINE_DOCUMENT_RETENTION_S through the worker's upkeep entry. S3 has no way to
    backdate an object, so the old one is put and the test waits until the server's own
    LastModified is past the retention (a deadline, not a timing). Objects that are not
    documents (another name, outside the prefix, deeper under it) are never touched."""
    retention_s = 3
    monkeypatch.setenv("PIPELINE_DOCUMENT_RETENTION_S", str(retention_s))
    get_settings.cache_clear()
    client = QueueClient(connect_redis(redis_url), settings=get_settings())
    store = open_store(client.settings)
    prefix = client.keys.prefix
    old, fresh = "a" * 64, "b" * 64
    foreign = ["docs/notes.txt", f"elsewhere/{old}", f"docs/deeper/{old}", old,
               f"docs/{prefix}/deeper/{old}"]  # fmt: skip
    try:
        store.put(old, b"orphan")
        for name in foreign:
            s3.client.put_object(Bucket=s3.bucket, Key=name, Body=b"not ours")
        put_at = s3.client.head_object(Bucket=s3.bucket,
                                       Key=f"docs/{prefix}/{old}")["LastModified"]  # fmt: skip
        # S3 cannot backdate an object: wait until the server's LastModified (this machine's
        # clock) is past the retention
        time.sleep(max(0.0, retention_s + 0.6 - (datetime.now(UTC) - put_at).total_seconds()))
        store.put(fresh, b"fresh")
        ((name, sweep, every_s),) = document_hooks(client, store)["upkeep"]
        assert name == "document-sweep" and every_s > 0
        asyncio.run(sweep())
        assert s3.names() == sorted([f"docs/{prefix}/{fresh}", *foreign])
    finally:
        asyncio.run(client.aclose())


def test_an_unreachable_endpoint_or_a_missing_bucket_is_a_clear_error(s3: S3) -> None:
    sha, data = "c" * 64, b"%PDF-1.4"
    gone = S3Store(s3.bucket, "docs", endpoint_url=f"http://127.0.0.1:{_closed_port()}")
    calls = {"put": lambda st: st.put(sha, data), "get": lambda st: st.get(sha),
             "exists": lambda st: st.exists(sha), "delete": lambda st: st.delete(sha),
             "sweep": lambda st: st.aged(60)}  # fmt: skip
    for what, call in calls.items():
        with pytest.raises(DocumentStoreError) as unreachable:
            call(gone)
        assert not isinstance(unreachable.value, DocumentMissing), what
        assert "cannot reach the S3 endpoint" in str(unreachable.value), what
        assert "PIPELINE_DOCUMENT_STORE_ENDPOINT" in str(unreachable.value), what
    nowhere = S3Store("no-such-bucket-here", "docs", endpoint_url=s3.endpoint)
    for what, call in calls.items():
        with pytest.raises(DocumentStoreError) as no_bucket:
            call(nowhere)
        assert not isinstance(no_bucket.value, DocumentMissing), what
        assert "the bucket 'no-such-bucket-here' does not exist" in str(no_bucket.value), what
    with pytest.raises(DocumentStoreError, match="PIPELINE_DOCUMENT_STORE_ENDPOINT"):
        S3Store(s3.bucket, "docs", endpoint_url="not a url")


def test_submit_with_a_missing_bucket_says_so_without_a_traceback(
    s3: S3, pipeline_env: dict[str, str], tmp_path: Path, sredis: redis.Redis
) -> None:
    pdf = tmp_path / "a.pdf"
    pdf.write_bytes(make_pdf(1))
    env = {**pipeline_env, "PIPELINE_DOCUMENT_STORE": "s3://no-such-bucket-here/docs"}
    r = run_cli(env, "submit", str(pdf))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "error: storing a document at s3://no-such-bucket-here/docs" in r.stderr
    assert "does not exist; create it or fix PIPELINE_DOCUMENT_STORE" in r.stderr


async def test_the_api_answers_503_naming_the_store_when_it_cannot_be_used(
    s3: S3, tmp_path: Path, redis_url: str, key_prefix: str, sredis: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """An upload the store cannot take is the service's trouble, not the caller's request:
    503 with the store's one-line reason, and a warning in the log, not a traceback."""
    settings = api_settings(tmp_path, redis_url, key_prefix,
                            document_store="s3://no-such-bucket-here/docs",
                            document_store_endpoint=s3.endpoint)  # fmt: skip
    async with api_client(settings) as (client, _):
        r = await client.post("/analyze", files=pdf_files(("a.pdf", make_pdf(1))))
    assert r.status_code == 503, r.text
    assert "the bucket 'no-such-bucket-here' does not exist" in r.json()["detail"]
    assert not [rec for rec in caplog.records if rec.exc_info], "a traceback was logged"


# -- submit + worker -------------------------------------------------------------------------
async def test_bytes_live_in_s3_while_queued_are_read_from_a_copy_and_go_when_the_job_ends(
    s3: S3, pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    copies: list[tuple[Path, bytes]] = []
    make_copy = local._copy

    def recorded(store: DocumentStore, sha256: str, scratch: Path) -> Path:
        path = make_copy(store, sha256, scratch)
        copies.append((path, path.read_bytes()))
        return path

    monkeypatch.setattr(local, "_copy", recorded)
    client = QueueClient(connect_redis(redis_url), settings=get_settings())
    pdf = make_pdf(40, "Page {n}. " + os.urandom(1500).hex())  # ~110 KB, barely compressible
    home = Path(pipeline_env["PIPELINE_HOME"])
    try:
        sub = await submit_uploads(client, [Upload("a.pdf", pdf)])
        (doc,) = sub.documents
        assert doc.status == "queued" and doc.job_id and doc.sha256
        key = f"docs/{client.keys.prefix}/{doc.sha256}"
        assert s3.names() == [key]  # in S3 while queued ...
        assert s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read() == pdf
        assert_no_pdf_bytes_in_redis(sredis, client.keys.prefix, len(pdf))  # ... not in Redis
        assert set(sredis.hkeys(client.keys.document(doc.sha256))) == {doc.job_id}
        assert not (home / "documents").exists()  # nor in the local folder

        assert await run_until_done(client, doc.job_id) == State.COMPLETE
        job = await client.get(doc.job_id)
        assert isinstance(job.result, dict) and job.result
        assert copies and all(data == pdf for _, data in copies)  # the worker read a copy
        assert all(path.parent == home / "scratch" for path, _ in copies)
        assert list((home / "scratch").iterdir()) == []  # ... removed when the job was done
        assert s3.names() == []  # gone once its last job ended
        assert not sredis.exists(client.keys.document(doc.sha256))
    finally:
        await client.aclose()


async def test_a_document_missing_from_s3_fails_the_job_saying_where_and_why(
    s3: S3, redis_url: str, sredis: redis.Redis
) -> None:
    client = QueueClient(connect_redis(redis_url), settings=get_settings())
    try:
        sub = await submit_uploads(client, [Upload("a.pdf", make_pdf(1))])
        (doc,) = sub.documents
        assert doc.job_id and doc.sha256
        where = f"{s3.url}/{client.keys.prefix} ({s3.endpoint})"
        s3.client.delete_object(Bucket=s3.bucket, Key=f"docs/{client.keys.prefix}/{doc.sha256}")
        assert await run_until_done(client, doc.job_id) == State.FAILED
        job = await client.get(doc.job_id)
        assert f"is not in the store at {where}:" in (job.error or "")
        assert "several machines" not in (job.error or "")  # S3 is every machine's store
        assert job.attempt == 1  # no retry can find it: failed at once
    finally:
        await client.aclose()


@pytest.mark.slow
def test_two_machines_one_bucket_submitted_on_one_analysed_on_the_other(
    s3: S3, pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis, tmp_path: Path
) -> None:
    """Two homes (two machines' local folders) sharing Redis, the ledger and the bucket:
    `pipeline submit --wait` on one, `pipeline worker` with the offline analyzer on the
    other. The 5-page document is split in parts of two pages, which that worker puts in the
    bucket for the part jobs. Neither home's folder ever holds a document; the bucket is
    empty at the end."""
    prefix = pipeline_env["PIPELINE_KEY_PREFIX"]
    pipeline_env["PIPELINE_CONTEXT_BUDGET_TOKENS"] = str(2 * 560 + 4096 + 10)  # 2 pages a part
    here = {**pipeline_env, "PIPELINE_HOME": str(tmp_path / "submitter")}
    there = {**pipeline_env, "PIPELINE_HOME": str(tmp_path / "worker")}
    pdf = tmp_path / "contract.pdf"
    pdf.write_bytes(make_pdf(5, "Contract, page {n}. Rent is due monthly."))
    worker = WorkerProcess(redis_url, prefix, imports=("tasks.analyze",), **there)
    try:
        r = run_cli(here, "submit", str(pdf), "--json", "--wait")
        assert r.returncode == 0, r.stdout + r.stderr + worker.output()
        sub = json.loads(r.stdout.splitlines()[0])
        assert [d["status"] for d in sub["documents"]] == ["queued"]
        res = run_cli(here, "results", sub["batch_id"], "--json")
        assert res.returncode == 0, res.stderr
        (doc,) = json.loads(res.stdout)
        parts = doc["analysis"]["parts"]
        assert [(p["first_page"], p["last_page"]) for p in parts] == [(1, 2), (3, 4), (5, 5)]
        # the bytes go in a hook after the job's end
        until(lambda: not s3.names(), 30, "the stored bytes to go")
    finally:
        worker.close()
    for home in (tmp_path / "submitter", tmp_path / "worker"):
        assert not (home / "documents").exists(), home
    assert list((tmp_path / "worker" / "scratch").iterdir()) == []  # copies made, removed
