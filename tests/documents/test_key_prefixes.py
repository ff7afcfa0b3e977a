"""Key prefixes and the document store (pipeline/storage/prefixed.py): no prefix ever removes
bytes another prefix still needs, on the folder store and on S3; documents stored where every
prefix shared them before 2026-11-30 are still found, and go with their last job of any
prefix; the messages a missing document gives say what is true on one machine.

Real Redis, a SQLite ledger, in-process workers with the offline analyzer, the real CLI for
the rehearsal a user ran (`pipeline submit`, `pipeline run` under another PIPELINE_KEY_PREFIX
against the emulator, `pipeline worker --burst`, `pipeline retry`), moto's S3 server for S3.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis

from pipeline.errors import DocumentMissing
from pipeline.queue.client import QueueClient
from pipeline.queue.job import State
from pipeline.redis.connection import connect_redis
from pipeline.redis.keys import Keys
from pipeline.settings import get_settings, load_settings
from pipeline.storage import open_store, queue_spans_machines
from pipeline.storage.files import FileStore
from pipeline.storage.holds import document_hooks, hold
from pipeline.storage.prefixed import PrefixedStore
from tasks.submission import Upload, submit_uploads
from tests.documents.conftest import run_until_done
from tests.support.cli import run_cli
from tests.support.emulator import start_emulator
from tests.support.pdfs import make_pdf


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _drop(sredis: redis.Redis, prefix: str) -> None:
    for key in sredis.scan_iter(match="{" + prefix + "}*", count=1000):
        sredis.delete(key)


@pytest.fixture(params=["file", "s3"])
def backend(request: pytest.FixtureRequest, pipeline_env: dict[str, str]) -> str:
    """Each test of this fixture once on the home's folder and once on S3 (moto's server)."""
    if request.param == "s3":
        request.getfixturevalue("s3")
    return str(request.param)


@pytest.fixture
async def two_prefixes(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, sredis: redis.Redis
) -> AsyncIterator[tuple[QueueClient, QueueClient]]:
    """Clients of the test's prefix (`main`) and of a rehearsal's prefix on the same home,
    ledger and store (S3 when `backend` is named before it); the rehearsal's keys are
    dropped afterwards."""
    main = QueueClient(connect_redis(redis_url), settings=get_settings())
    rehearsal = QueueClient(connect_redis(redis_url),
                            settings=load_settings(key_prefix=f"{key_prefix}-nurh"))  # fmt: skip
    try:
        yield main, rehearsal
    finally:
        await main.aclose()
        await rehearsal.aclose()
        _drop(sredis, rehearsal.keys.prefix)


# -- the user's case, as they ran it --------------------------------------------------------
@pytest.mark.slow
def test_a_rehearsal_under_another_prefix_leaves_the_queued_document_of_the_main_prefix(
    pipeline_env: dict[str, str], sredis: redis.Redis, tmp_path: Path
) -> None:
    """`pipeline submit my8/` with no worker (the offline analyzer); the same folder
    rehearsed with `pipeline run` against the emulator under another PIPELINE_KEY_PREFIX on
    the same home; then `pipeline worker --burst` on the main prefix. The rehearsal's last
    job used to delete the bytes the queued job still needed ("the document … is not in the
    store"): now each prefix has its own copy, and the main prefix's document completes."""
    folder = tmp_path / "my8"
    folder.mkdir()
    pdf = make_pdf(1, "Invoice {n} from Acme Ltd to Bob Smith, due 2026-12-01.")
    (folder / "invoice.pdf").write_bytes(pdf)
    sha = _sha(pdf)
    main = pipeline_env["PIPELINE_KEY_PREFIX"]
    rehearsal = f"{main}-nurh"
    home = Path(pipeline_env["PIPELINE_HOME"]).resolve()
    ours, theirs = (home / "documents" / p / sha[:2] / sha for p in (main, rehearsal))
    try:
        sub = run_cli(pipeline_env, "submit", str(folder), "--label", "r8", "--json")
        assert sub.returncode == 0, sub.stdout + sub.stderr
        (doc,) = json.loads(sub.stdout.splitlines()[0])["documents"]
        assert doc["status"] == "queued"
        assert ours.read_bytes() == pdf

        with start_emulator() as emu:
            env = {**pipeline_env, **emu.env, "GOOGLE_API_KEY": "",
                   "PIPELINE_KEY_PREFIX": rehearsal}  # fmt: skip
            ran = run_cli(env, "run", str(folder))
            assert ran.returncode == 0, ran.stdout + ran.stderr
            assert emu.stats()["generate_requests"] == 1  # the rehearsal's call
        assert not theirs.exists()  # the rehearsal's copy went with its last job ...
        assert ours.read_bytes() == pdf  # ... and the main prefix's stayed

        worker = run_cli(pipeline_env, "worker", "--burst")
        assert worker.returncode == 0, worker.stderr
        job = sredis.hgetall(Keys(main).job(doc["job_id"]))
        assert job["state"] == "complete", (job.get("error"), worker.stderr)
        assert not ours.exists()  # its last job ended
    finally:
        _drop(sredis, rehearsal)


# -- both backends, in process ----------------------------------------------------------------
async def test_a_prefixs_last_job_never_removes_bytes_another_prefix_holds(
    backend: str, two_prefixes: tuple[QueueClient, QueueClient]
) -> None:
    main, rehearsal = two_prefixes
    pdf = make_pdf(1)
    queued = (await submit_uploads(main, [Upload("a.pdf", pdf)])).documents[0]
    rehearsed = (await submit_uploads(rehearsal, [Upload("a.pdf", pdf)])).documents[0]
    assert queued.job_id and rehearsed.job_id and queued.sha256 == rehearsed.sha256 == _sha(pdf)
    ours, theirs = open_store(main.settings), open_store(rehearsal.settings)
    assert ours.where != theirs.where and main.keys.prefix in ours.where

    assert await run_until_done(rehearsal, rehearsed.job_id) == State.COMPLETE
    assert not theirs.exists(_sha(pdf))  # the rehearsal's copy went with its last job ...
    assert ours.get(_sha(pdf)) == pdf  # ... the main prefix's stays for its queued job
    assert await run_until_done(main, queued.job_id) == State.COMPLETE
    assert not ours.exists(_sha(pdf))


async def test_a_document_stored_before_the_upgrade_is_found_and_goes_with_its_last_job(
    backend: str, two_prefixes: tuple[QueueClient, QueueClient]
) -> None:
    """Upgrading with jobs queued: an earlier version stored the document once, where every
    prefix shared it, and both prefixes' jobs hold it. Each job still finds it; the copy
    stays while the other prefix's job holds it and goes when that one ends."""
    main, rehearsal = two_prefixes
    pdf = make_pdf(2)
    sha = _sha(pdf)
    queued = (await submit_uploads(main, [Upload("a.pdf", pdf)])).documents[0]
    other = (await submit_uploads(rehearsal, [Upload("a.pdf", pdf)])).documents[0]
    assert queued.job_id and other.job_id
    ours, theirs = open_store(main.settings), open_store(rehearsal.settings)
    # As the earlier version left it: at the shared place only.
    ours.legacy.put(sha, pdf)
    ours.own.delete(sha)
    theirs.own.delete(sha)
    assert ours.exists(sha) and ours.get(sha) == pdf and not ours.own.exists(sha)

    assert await run_until_done(main, queued.job_id) == State.COMPLETE
    assert ours.legacy.exists(sha)  # the other prefix's queued job still holds it
    assert theirs.get(sha) == pdf
    assert await run_until_done(rehearsal, other.job_id) == State.COMPLETE
    assert not ours.legacy.exists(sha)  # its last job of any prefix ended
    assert not ours.own.exists(sha) and not theirs.own.exists(sha)


# -- the retention sweep ----------------------------------------------------------------------
async def test_the_sweep_removes_only_its_own_prefixs_and_orphaned_legacy_bytes(
    two_prefixes: tuple[QueueClient, QueueClient],
) -> None:
    """On the folder store, whose files can be backdated (S3's sweep: test_s3_store.py)."""
    main, rehearsal = two_prefixes
    ours, theirs = open_store(main.settings), open_store(rehearsal.settings)
    assert isinstance(ours.own, FileStore) and isinstance(theirs.own, FileStore)
    assert isinstance(ours.legacy, FileStore)
    mine, other, orphan, held, fresh = (c * 64 for c in "abcde")
    placed = [(ours.own, mine), (theirs.own, other), (ours.legacy, orphan),
              (ours.legacy, held), (ours.legacy, fresh)]  # fmt: skip
    past = time.time() - main.settings.document_retention_s - 60
    for store, sha in placed:
        store.put(sha, b"pdf " + sha.encode())
        if sha != fresh:
            os.utime(store.path(sha), (past, past))
    # A job of the other prefix holds the old shared copy `held`.
    await hold(rehearsal.redis, rehearsal.keys, ["theirs"], held, 60)
    ((_, sweep, _),) = document_hooks(main, ours)["upkeep"]
    await sweep()
    assert not ours.own.exists(mine)  # our own orphan, past retention
    assert theirs.own.exists(other)  # another prefix's bytes: never ours to sweep
    assert not ours.legacy.exists(orphan)  # a shared copy no prefix holds
    assert ours.legacy.exists(held) and ours.legacy.exists(fresh)


# -- what a missing document says -------------------------------------------------------------
@pytest.mark.parametrize(("url", "store", "hint"), [
    (None, "file", False),  # the private Redis: a unix socket, this machine only
    ("unix:///tmp/redis.sock", "file", False),
    ("redis://127.0.0.1:6379/0", "file", False),
    ("redis://localhost/0", "file", False),
    ("redis://queue-host:6379/0", "file", True),  # workers elsewhere may share the queue
    ("redis+sentinel://127.0.0.1:26379,s2:26379/mymaster/0", "file", True),
    ("redis://queue-host:6379/0", "file:///mnt/shared/docs", False),  # a folder named: shared
])  # fmt: skip
def test_several_machines_are_named_only_when_the_queue_reaches_them(
    tmp_path: Path, url: str | None, store: str, hint: bool
) -> None:
    settings = load_settings(home=tmp_path, redis_url=url, document_store=store,
                             key_prefix="pipeline")  # fmt: skip
    if store == "file":
        assert queue_spans_machines(url) == hint
    opened = open_store(settings)
    assert isinstance(opened, PrefixedStore) and opened.where.endswith("/pipeline")
    with pytest.raises(DocumentMissing) as missing:
        opened.get("f" * 64)
    text = str(missing.value)
    assert f"is not in the store at {opened.where}" in text
    assert ("with workers on several machines use a shared folder or S3" in text) == hint
    assert "Submit the file again to put it back" in text


def test_retry_says_why_a_document_has_no_bytes_without_claiming_a_retention_it_did_not_wait(
    pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis
) -> None:
    """A document whose bytes went while its failed job still held it (removed from outside
    the pipeline): `pipeline retry --failed` says so, not "kept PIPELINE_DOCUMENT_RETENTION_S".
    Only once no job holds it any more (its hold expired) is the retention the reason."""
    settings = get_settings()
    keys = Keys(settings.key_prefix)

    async def submit_and_fail() -> tuple[str, str, str]:
        client = QueueClient(connect_redis(redis_url), settings=settings)
        try:
            sub = await submit_uploads(client, [Upload("a.pdf", make_pdf(1))], label="r8")
            (doc,) = sub.documents
            assert doc.job_id and doc.sha256
            open_store(settings).delete(doc.sha256)  # removed by hand, say
            assert await run_until_done(client, doc.job_id) == State.FAILED
            return sub.batch_id, doc.job_id, doc.sha256
        finally:
            await client.aclose()

    batch, job_id, sha = asyncio.run(submit_and_fail())

    def retried() -> dict[str, str]:
        r = run_cli(pipeline_env, "retry", batch, "--failed", "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        (only,) = json.loads(r.stdout)["documents"]
        assert only["status"] == "skipped", only
        return dict(only)

    held = retried()
    assert "though a job still holds it" in held["reason"], held
    assert "RETENTION" not in held["reason"] and "several machines" not in held["reason"]
    assert set(sredis.hkeys(keys.document(sha))) == {job_id}  # the retry's hold let go

    sredis.delete(keys.document(sha))  # as when its hold expired
    expired = retried()
    assert "no job had held it for PIPELINE_DOCUMENT_RETENTION_S (7 days)" in expired["reason"]
    assert not sredis.exists(keys.document(sha))
