"""Tests of the product's own job in tasks/: PDFs, prompts, the analysis schema, the analysis
task's failure paths, submission and resubmission of documents, the document store.

What only these tests share is here: `run_until_done` (an in-process worker until a job
ends), `assert_no_pdf_bytes_in_redis`, and the S3 fixtures (`s3_endpoint`: moto's S3 server
for the session; `s3`: a fresh bucket and the test's settings pointed at it). What they use
from other folders is in tests/support/: `emulator`, `pdfs.make_pdf`, `cli.run_cli` and
`EXAMPLES`, `paid_workers` (the ledger's rows), `waiting.eventually`, `s3_server`. The
committed PDFs are in tests/fixtures/.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from pipeline.llm.provider import Provider
from pipeline.queue.client import QueueClient
from pipeline.queue.job import State
from pipeline.settings import get_settings
from tests.support.s3_server import S3_ENV, start_s3_server
from tests.support.waiting import eventually

PDF_MARKS = (b"%PDF-", base64.b64encode(b"%PDF-")[:6])


async def run_until_done(
    client: QueueClient, job_id: str, provider: Provider | None = None
) -> State:
    """An in-process worker with `provider` (default: the one the settings name, the offline
    analyzer in these tests) until `job_id` is terminal; its end state, the ledger flushed."""
    import tasks.analyze  # noqa: F401  (registers the tasks)
    from pipeline.services import build_worker, open_services

    services = await open_services(client, provider=provider)
    worker = await build_worker(client, queues=["default"], concurrency=2, services=services)
    run = asyncio.create_task(worker.run(install_signals=False))
    try:

        async def ended() -> State | None:
            job = await client.get(job_id)
            return job.state if job.done else None

        state: State = await eventually(ended, 90, f"job {job_id} to end")
        return state
    finally:
        worker.stop()
        await asyncio.wait_for(run, 30)
        await services.recorder.flush()  # every ledger row the worker wrote, for the test
        await services.aclose()


def assert_no_pdf_bytes_in_redis(sredis: redis.Redis, prefix: str, pdf_size: int) -> None:
    """No string or hash value under the prefix carries PDF bytes, raw or base64, and no key
    is anywhere near the PDF's size (Redis's MEMORY USAGE)."""
    keys = list(sredis.scan_iter(match="{" + prefix + "}*", count=1000))
    assert keys, "the submission wrote nothing to Redis"
    for key in keys:
        kind = str(sredis.type(key))
        values: list[str] = []
        if kind == "string":
            values = [str(sredis.get(key) or "")]
        elif kind == "hash":
            values = [str(v) for v in sredis.hvals(key)]
        for value in values:
            raw = value.encode("utf-8", "surrogateescape")
            assert not any(mark in raw for mark in PDF_MARKS), f"PDF bytes in {key!r}"
        used = int(sredis.memory_usage(key) or 0)
        assert used < pdf_size // 4, f"{key!r} uses {used} bytes for a {pdf_size}-byte PDF"


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server, one per test process (each test has a bucket of its own)."""
    with start_s3_server(tmp_path_factory.mktemp("s3")) as endpoint:
        yield endpoint


@dataclass(frozen=True)
class S3:
    """A test's bucket: `env` points PIPELINE_DOCUMENT_STORE at `url` (prefix `docs`) on
    `endpoint` with the dummy credentials; `client` is a boto3 client to look inside."""

    endpoint: str
    bucket: str
    url: str
    env: dict[str, str]
    client: Any

    def names(self) -> list[str]:
        """The object names in the bucket, sorted."""
        reply = self.client.list_objects_v2(Bucket=self.bucket)
        return sorted(obj["Key"] for obj in reply.get("Contents", []))


@pytest.fixture
def s3(
    s3_endpoint: str, pipeline_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[S3]:
    """A fresh bucket on moto's server, and the test's settings (and `pipeline_env`, for
    subprocesses) using it as the document store; the AWS variables for this test only."""
    import boto3

    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    bucket = f"pipeline-{uuid.uuid4().hex[:16]}"
    client = boto3.session.Session().client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=bucket)
    url = f"s3://{bucket}/docs"
    env = {"PIPELINE_DOCUMENT_STORE": url, "PIPELINE_DOCUMENT_STORE_ENDPOINT": s3_endpoint,
           **S3_ENV}  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    pipeline_env.update(env)
    get_settings.cache_clear()
    yield S3(s3_endpoint, bucket, url, env, client)
    get_settings.cache_clear()
