"""The document store (pipeline/storage/): PDF bytes in a folder, only references in Redis.

Real Redis, a SQLite ledger, in-process workers with the offline analyzer, and for the
SIGKILL case `pipeline worker` subprocesses calling the Gemini emulator over HTTP through the
real google-genai client. The S3 backend against a real S3 server: test_s3_store.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from pipeline.errors import DocumentMissing, DocumentStoreError
from pipeline.queue.client import QueueClient
from pipeline.queue.job import State
from pipeline.redis.connection import connect_redis
from pipeline.settings import get_settings
from pipeline.storage import open_store
from pipeline.storage.files import FileStore
from pipeline.storage.holds import document_hooks, hold
from tasks.submission import Upload, submit_uploads
from tests.documents.conftest import assert_no_pdf_bytes_in_redis, run_until_done
from tests.support.emulator import start_emulator
from tests.support.pdfs import make_pdf
from tests.support.workers import WorkerProcess


# -- the folder backend alone ----------------------------------------------------------------
def test_file_store_put_get_delete_atomic_and_concurrent(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "docs")
    data = make_pdf(3)
    sha = hashlib.sha256(data).hexdigest()
    assert not store.exists(sha)
    with ThreadPoolExecutor(8) as pool:  # concurrent puts of the same content are harmless
        list(pool.map(lambda _: store.put(sha, data), range(16)))
    assert store.exists(sha) and store.get(sha) == data
    leftovers = [p.name for p in (tmp_path / "docs").rglob("*") if p.is_file()]
    assert leftovers == [sha]  # no temp file left behind by any put
    store.delete(sha)
    store.delete(sha)  # absent is fine
    with pytest.raises(DocumentMissing) as missing:
        store.get(sha)
    text = str(missing.value)
    assert f"is not in the store at {store.where}:" in text
    assert "several machines" not in text  # a folder this machine alone uses: no such hint
    assert "Submit the file again to put it back" in text
    alone = FileStore(tmp_path / "docs", this_machine_only=True)  # the queue spans machines
    with pytest.raises(DocumentMissing, match="with workers on several machines use a shared "
                       "folder or S3"):  # fmt: skip
        alone.get(sha)
    with pytest.raises(DocumentStoreError):
        store.put("../../etc/passwd", b"x")


async def test_retention_sweep_removes_an_orphan_and_keeps_a_fresh_one(
    pipeline_env: dict[str, str], redis_url: str
) -> None:
    """Only bytes no job holds go: an old document still held (a retry queued days after
    its submission renews the hold, not the file's age) stays."""
    client = QueueClient(connect_redis(redis_url), settings=get_settings())
    store = open_store(client.settings)
    old, fresh, held = "a" * 64, "b" * 64, "c" * 64
    try:
        for sha in (old, fresh, held):
            await asyncio.to_thread(store.put, sha, b"pdf " + sha.encode())
        assert isinstance(store.own, FileStore)
        past = time.time() - client.settings.document_retention_s - 60
        for sha in (old, held):
            os.utime(store.own.path(sha), (past, past))
        await hold(client.redis, client.keys, ["retry-job"], held, 60)
        # The worker's upkeep entry, as the worker runs it.
        ((name, sweep, every_s),) = document_hooks(client, store)["upkeep"]
        assert name == "document-sweep" and every_s > 0
        await sweep()
        assert not store.exists(old)
        assert store.exists(fresh) and store.exists(held)
    finally:
        await client.redis.delete(client.keys.document(held))
        await client.aclose()


# -- submit + worker -------------------------------------------------------------------------
async def test_bytes_live_in_the_store_while_queued_and_go_when_the_job_ends(
    pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis
) -> None:
    client = QueueClient(connect_redis(redis_url), settings=get_settings())
    store = open_store(client.settings)
    pdf = make_pdf(40, "Page {n}. " + os.urandom(1500).hex())  # ~110 KB, barely compressible
    try:
        sub = await submit_uploads(client, [Upload("a.pdf", pdf)])
        (doc,) = sub.documents
        assert doc.status == "queued" and doc.job_id and doc.sha256
        assert store.get(doc.sha256) == pdf  # in the store while queued
        home = await asyncio.to_thread(os.path.realpath, pipeline_env["PIPELINE_HOME"])
        assert store.where == os.path.join(home, "documents", client.keys.prefix)
        assert_no_pdf_bytes_in_redis(sredis, client.keys.prefix, len(pdf))
        assert set(sredis.hkeys(client.keys.document(doc.sha256))) == {doc.job_id}

        assert await run_until_done(client, doc.job_id) == State.COMPLETE
        assert not store.exists(doc.sha256)  # gone once its last job ended
        assert not sredis.exists(client.keys.document(doc.sha256))

        # The same file again: a duplicate of a complete job, so the bytes put go again.
        again = await submit_uploads(client, [Upload("a-again.pdf", pdf)])
        assert again.documents[0].status == "duplicate"
        assert not store.exists(doc.sha256)
        assert not sredis.exists(client.keys.document(doc.sha256))
    finally:
        await client.aclose()


async def test_a_document_missing_from_the_store_fails_saying_where_and_why(
    pipeline_env: dict[str, str], redis_url: str
) -> None:
    client = QueueClient(connect_redis(redis_url), settings=get_settings())
    store = open_store(client.settings)
    try:
        sub = await submit_uploads(client, [Upload("a.pdf", make_pdf(1))])
        (doc,) = sub.documents
        assert doc.job_id and doc.sha256
        store.delete(doc.sha256)  # as if written on another machine's local folder
        assert await run_until_done(client, doc.job_id) == State.FAILED
        job = await client.get(doc.job_id)
        assert f"is not in the store at {store.where}:" in (job.error or "")
        # One machine (Redis on 127.0.0.1, the home's own folder): no "several machines".
        assert "several machines" not in (job.error or "")
        assert job.attempt == 1  # no retry can find it: failed at once
    finally:
        await client.aclose()


@pytest.mark.slow
def test_a_retry_after_a_worker_sigkill_still_finds_the_document(
    pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis
) -> None:
    prefix = pipeline_env["PIPELINE_KEY_PREFIX"]
    store = open_store(get_settings())
    with start_emulator(latency_s=(4.0, 4.0)) as emu:
        extra = {**pipeline_env, **emu.env, "GOOGLE_API_KEY": ""}

        async def submit() -> tuple[str, str]:
            client = QueueClient(connect_redis(redis_url), settings=get_settings())
            try:
                sub = await submit_uploads(client, [Upload("a.pdf", make_pdf(2))],
                                           expected_duration_s=1.0)  # fmt: skip
            finally:
                await client.aclose()
            (doc,) = sub.documents
            assert doc.job_id and doc.sha256
            return doc.job_id, doc.sha256

        job_id, sha = asyncio.run(submit())
        job_key = f"{{{prefix}}}:job:{job_id}"
        first = WorkerProcess(redis_url, prefix, imports=("tasks.analyze",), **extra)
        try:
            deadline = time.monotonic() + 60
            while emu.stats()["generate_requests"] < 1:  # the call is in flight
                assert first.proc.poll() is None, first.output()
                if time.monotonic() > deadline:  # a deadline, not a timing
                    raise AssertionError("no call within 60 s\n" + first.output())
                time.sleep(0.05)
            first.signal(signal.SIGKILL)
            first.proc.wait(10)
        finally:
            first.kill()
        assert store.exists(sha)  # a killed attempt lets go of nothing
        second = WorkerProcess(redis_url, prefix, imports=("tasks.analyze",), **extra)
        try:
            deadline = time.monotonic() + 120
            while (sredis.hget(job_key, "state") or b"") not in (b"complete", "complete"):
                state = sredis.hget(job_key, "state")
                assert state not in (b"failed", b"dead", "failed", "dead"), (
                    f"{state!r}: {sredis.hget(job_key, 'error')!r}\n" + second.output()
                )
                if time.monotonic() > deadline:
                    raise AssertionError("not complete in 120 s\n" + second.output())
                time.sleep(0.1)
            # The bytes go once the job has ended (a hook after the settlement): wait for that
            # before the worker is stopped, or a kill in between would be what kept them.
            gone_by = time.monotonic() + 30
            while store.exists(sha):
                if time.monotonic() > gone_by:
                    raise AssertionError("document still stored 30 s after its job ended")
                time.sleep(0.1)
        finally:
            second.kill()
        assert int(sredis.hget(job_key, "attempt") or 0) >= 2
