"""Batch groups above the inline limit go as a JSONL input file through the Files API: the
real google-genai client (resumable upload, batches.create from a file name, files.download
of the responses file) over HTTP to the emulator, real Redis, the SQL ledger (SQLite and
PostgreSQL). One file upload (plus one per PDF when a line is over its limit), zero
generateContent, answers by key, the ledger equal to the emulator's batch bill, and every
uploaded file deleted once the job is booked."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from sqlalchemy import Engine

from pipeline.llm.batch_group import BatchGroups
from pipeline.llm.batch_items import BatchItem, inline_bytes
from pipeline.llm.callstore import CallStore, call_key
from pipeline.llm.gemini import GeminiProvider
from pipeline.llm.provider import Part
from pipeline.redis.keys import Keys
from tests.llm import test_batch_group as inline_tests
from tests.llm.test_batch_group import MODEL, _collect, _rows
from tests.llm.test_batch_group import _groups as _inline_groups
from tests.llm.test_batch_group import _items as _text_items
from tests.support.emulator import RunningEmulator, start_emulator
from tests.support.pdfs import make_pdf

MICRO = Decimal("0.000001")
# The ledger fixtures of the inline tests: each test runs on SQLite and on PostgreSQL.
ledger_url = inline_tests.ledger_url
engine = inline_tests.engine


def _items(n: int) -> list[BatchItem]:
    """Requests that each carry a PDF of i + 1 pages before their text."""
    return [replace(item, request=replace(item.request, parts=(
        Part.pdf(make_pdf(i + 1, f"Report {i}. Globex signed with Initech.")),
        *item.request.parts))) for i, item in enumerate(_text_items(n))]  # fmt: skip


def _groups(emu: RunningEmulator, engine: Engine, aredis: aioredis.Redis, keys: Keys,
            line_max_bytes: int) -> tuple[GeminiProvider, BatchGroups]:  # fmt: skip
    provider, groups = _inline_groups(emu, engine, aredis, keys)
    groups.inline_max_bytes, groups.line_max_bytes = 2000, line_max_bytes
    return provider, groups


# (line limit, uploads expected besides the input file): every line fits, or none does and
# each PDF goes as its own uploaded file referenced by fileData.fileUri.
@pytest.mark.parametrize(("line_max_bytes", "pdf_uploads"), [(20 * 1024 * 1024, 0), (100, 3)])
async def test_a_group_over_the_inline_limit_goes_as_an_input_file(
    engine: Engine, aredis: aioredis.Redis, keys: Keys, line_max_bytes: int, pdf_uploads: int
) -> None:
    items = _items(3)
    assert inline_bytes([(i.key, i.request) for i in items]) > 2000  # over the limit set
    with start_emulator(batch_delay_s=0.6) as emu:
        provider, groups = _groups(emu, engine, aredis, keys, line_max_bytes)
        tokens = {i.key: await provider.count_tokens(i.request) for i in items}
        remote = await groups.submit(MODEL, items, tokens, batch_id="files")
        during = emu.stats()["files"]
        collected = await _collect(groups, items, tokens)
        await provider.aclose()
        stats = emu.stats()
    assert remote.name.startswith("batches/")
    assert during["uploads"] == 1 + pdf_uploads and during["live"] == 1 + pdf_uploads
    assert stats["generate_requests"] == 0 and stats["batch"]["jobs_created"] == 1
    assert stats["batch"]["requests"] == 3
    # The answers came from the responses file, by key, as the requests asked (JSON).
    assert collected.remote.responses_file and stats["files"]["downloads"] == 1
    assert sorted(collected.answers) == sorted(tokens) and not collected.failed
    assert not collected.unusable
    # Every upload deleted once booked; only the service's responses file is left.
    assert stats["files"]["deleted"] == 1 + pdf_uploads and stats["files"]["live"] == 1
    assert not [f for f in await aredis.hkeys(keys.batch_group(remote.display_name))
                if str(f).find("file:") >= 0]  # fmt: skip
    rows = _rows(engine)
    assert {(r.mode, r.outcome) for r in rows} == {("batch", "ok")} and len(rows) == 3
    # A PDF sent as fileData is read and billed as the same PDF inline would be.
    assert {r.document_id: r.input_tokens for r in rows} == tokens
    booked = sum((r.cost_usd for r in rows), Decimal(0))
    assert abs(booked - Decimal(stats["batch"]["billed_total"]["cost_usd"])) <= MICRO
    store = CallStore(aredis, keys)
    for item in items:
        assert (await store.get(call_key(item.request, provider.name))) is not None


async def test_an_input_file_uploaded_before_a_failed_create_is_used_again(
    engine: Engine, aredis: aioredis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A create that fails after the upload (the connection drops; a worker dies) leaves the
    recorded input file; the next submit uses it instead of uploading the group again."""
    from pipeline.llm.batch import GeminiBatches
    from pipeline.llm.failure import ProviderCallError, ProviderFailure

    items = _items(2)
    real_create = GeminiBatches.create
    calls: list[str | None] = []

    async def create_once_failing(self: GeminiBatches, *args: object, **kw: object) -> object:
        calls.append(str(args[-1]) if len(args) == 4 else None)
        if len(calls) == 1:
            raise ProviderCallError(ProviderFailure(code=503, status="UNAVAILABLE",
                                                    message="dropped", retryable=True))
        return await real_create(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(GeminiBatches, "create", create_once_failing)
    with start_emulator(batch_delay_s=0.3) as emu:
        provider, groups = _groups(emu, engine, aredis, keys, 20 * 1024 * 1024)
        tokens = {i.key: 100 for i in items}
        with pytest.raises(ProviderCallError):
            await groups.submit(MODEL, items, tokens)
        remote = await groups.submit(MODEL, items, tokens)
        collected = await _collect(groups, items, tokens)
        await provider.aclose()
        stats = emu.stats()
    assert calls[0] is not None and calls[0] == calls[1]  # the same files/… both times
    assert stats["files"]["uploads"] == 1 and stats["batch"]["jobs_created"] == 1
    assert collected.remote.name == remote.name and sorted(collected.answers) == sorted(tokens)
    assert stats["files"]["deleted"] == 1


async def test_the_files_api_speaks_the_sdk_protocol() -> None:
    """Upload (resumable, in the SDK's chunks), get, delete; an uploaded file cannot be
    downloaded (only files the service generated can), as with Google."""
    from pipeline.llm.failure import ProviderCallError

    data = b"x" * (9 * 1024 * 1024)  # over the SDK's 8 MiB chunk: two upload requests
    with start_emulator() as emu:
        provider = GeminiProvider(api_key=emu.api_key, base_url=emu.base_url)
        files = provider.batches.files
        up = await files.upload(data, "application/octet-stream", "big")
        there = await files.exists(up.name)
        with pytest.raises(ProviderCallError) as refused:
            await files.download(up.name)
        gone = await files.delete(up.name)
        after = await files.exists(up.name), await files.delete(up.name)
        await provider.aclose()
        stats = emu.stats()
    assert up.name.startswith("files/") and up.uri.endswith(up.name)
    assert there and gone and after == (False, False)
    assert refused.value.failure.code == 404
    assert stats["files"] == {"uploads": 1, "deleted": 1, "downloads": 0, "live": 0}
