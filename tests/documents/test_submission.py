"""`submit_uploads`, the front door the CLI and the HTTP API share, against real Redis + SQLite."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import redis

from pipeline.errors import UnknownModel
from pipeline.llm.factory import make_provider, provider_kind
from pipeline.queue.client import QueueClient
from pipeline.queue.record import idempotency_digest
from pipeline.redis.connection import connect_redis
from pipeline.settings import get_settings, load_settings
from pipeline.storage import open_store
from tasks.result import build_result, part_outcome, reusable
from tasks.submission import Upload, estimate, submit_uploads
from tests.support.pdfs import make_pdf


async def test_submit_stores_bytes_enqueues_once_and_skips_bad_files(
    pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis
) -> None:
    client = QueueClient(connect_redis(redis_url), settings=get_settings())
    pdf = make_pdf(2)
    try:
        with pytest.raises(UnknownModel):
            await submit_uploads(client, [Upload("a.pdf", pdf)], model="gpt-nope")
        assert not list(sredis.scan_iter(match="{" + client.keys.prefix + "}:job:*", count=1000))

        sub = await submit_uploads(
            client,
            [Upload("a.pdf", pdf), Upload("b-renamed.pdf", pdf), Upload("c.pdf", b"hello")],
            budget_usd=Decimal("1.50"),
            priority="high",
            label="t",
        )
        first, dup, bad = sub.documents
        assert (first.status, dup.status, bad.status) == ("queued", "duplicate", "skipped")
        assert dup.job_id == first.job_id and first.pages == 2
        assert "not a PDF" in (bad.reason or "")
        job = await client.get(first.job_id or "")
        assert job.priority == 9 and job.batch == sub.batch_id
        assert job.hints["model"] == get_settings().model and job.hints["tokens"] > 2 * 500
        (args,) = job.args
        assert args["sha256"] == first.sha256 and args["budget_usd"] == "1.50"
        provider = provider_kind(get_settings())
        key = f"analyze:{first.sha256}:{args['model']}:{sub.prompt_version}:{provider}"
        assert job.idempotency_key == idempotency_digest(key)  # the key's digest, not the key
        assert open_store(get_settings()).get(first.sha256 or "") == pdf
        # Redis holds only the job holding the bytes (the duplicate's own id let go).
        holders = client.keys.document(first.sha256 or "")
        assert set(sredis.hkeys(holders)) == {first.job_id}
        assert 0 < sredis.ttl(holders) <= get_settings().document_retention_s
        json.dumps(sub.to_dict())  # JSON-ready
    finally:
        await client.aclose()


def test_estimate_counts_pages_and_prompt(pipeline_env: dict[str, str]) -> None:
    uploads = [Upload("a.pdf", make_pdf(3)), Upload("x.pdf", b"nope")]
    est = estimate(uploads, "gemini-2.5-flash-lite")
    ok, bad = est["documents"]
    assert ok["input_tokens"] > 3 * 258 and ok["calls"] == 1
    assert bad["status"] == "skipped"
    assert est["total_worst_case_usd"] == ok["worst_case_usd"] > 0


async def test_a_queued_document_job_is_a_compact_record_and_its_content_dedupes(
    pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis
) -> None:
    """The root job of a queued document stays a listpack in Redis (every value within the
    default hash-max-listpack-value: pipeline/queue/record.py), and the same content sent
    again, under another name, still finds that job."""
    client = QueueClient(connect_redis(redis_url), settings=get_settings())
    pdf = make_pdf(1)
    name = "/srv/inbox/2026/november/scans/facture-fournisseur-été-000123.pdf"
    try:
        (first,) = (await submit_uploads(client, [Upload(name, pdf)])).documents
        (again,) = (await submit_uploads(client, [Upload("renamed.pdf", pdf)])).documents
        assert first.status == "queued" and again.status == "duplicate"
        assert again.job_id == first.job_id
        record = client.keys.job(first.job_id or "")
        assert sredis.object("encoding", record) == "listpack"
        job = await client.get(first.job_id or "")
        (args,) = job.args
        assert args["sha256"] == first.sha256 and args["name"] == name
    finally:
        await client.aclose()


async def test_the_same_content_for_another_provider_is_a_new_run(
    pipeline_env: dict[str, str], redis_url: str
) -> None:
    """A document the offline analyzer answered (the demo, no key) is not "already
    submitted" when it is sent for the emulator or for Gemini: their answers never stand for
    each other, so each provider gets a job of its own; the same provider again dedupes."""
    runs = {}
    pdf = make_pdf(1)  # once: a PDF made in another second has another creation date
    for provider in ("offline", "emulator", "gemini", "offline"):
        settings = load_settings(provider=provider)
        client = QueueClient(connect_redis(redis_url), settings=settings)
        try:
            (doc,) = (await submit_uploads(client, [Upload("a.pdf", pdf)])).documents
        finally:
            await client.aclose()
        runs.setdefault(provider, []).append((doc.status, doc.job_id))
    (offline, again) = runs["offline"]
    (emulator,), (gemini,) = runs["emulator"], runs["gemini"]
    assert offline[0] == emulator[0] == gemini[0] == "queued"
    assert len({offline[1], emulator[1], gemini[1]}) == 3
    assert again == ("duplicate", offline[1])


def test_an_emulator_answer_never_stands_for_gemini(pipeline_env: dict[str, str]) -> None:
    """The provider that answers is part of the stored result: a rehearsal's emulator result
    (same document, model and prompt, same ledger) is not reused by a run with a real key."""
    emulator = make_provider(load_settings(provider="emulator"))
    assert emulator.name == "emulator"
    part = part_outcome({"summary": "s"}, part=1, first_page=1, last_page=1,
                        model_version="gemini-3.5-flash-lite", cost=Decimal("0.001"),
                        blank_pages=[], started_at="2026-11-30T00:00:00+00:00",
                        provider=emulator.name)  # fmt: skip
    analysis = {"summary": "s", "key_points": [], "document_type": "other", "language": "en",
                "page_count": 1, "entities": {}}  # fmt: skip
    result = build_result(analysis, [part], model="gemini-3.5-flash-lite",
                          prompt_version="analyze-v1", max_bytes=16_384)  # fmt: skip
    assert result["produced_by"]["provider"] == "emulator"
    assert reusable(result, "emulator") and not reusable(result, "gemini")
