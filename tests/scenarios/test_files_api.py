"""Large PDFs of interactive calls go through the Files API (pipeline/llm/uploads.py): the
real google-genai client (resumable upload, countTokens and generateContent citing
`fileData.fileUri`, files.delete) over HTTP to the emulator, a real worker, Redis and the
SQLite ledger. The threshold is shrunk (to 20 kB) so the PDFs stay small."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fpdf import FPDF
from PIL import Image

from pipeline.llm.failure import ProviderCallError
from pipeline.llm.gemini import GeminiProvider
from pipeline.llm.provider import LLMRequest, Part
from pipeline.queue.job import State
from tasks.submission import Upload
from tests.support.emulator import RunningEmulator, start_emulator
from tests.support.paid_rig import assert_ledger_is_the_bill, running_pipeline, set_faults
from tests.support.pdfs import make_pdf

MODEL = "gemini-3.5-flash-lite"
THRESHOLD = 20_000  # bytes: PIPELINE_FILES_API_MIN_BYTES for these tests


def large_pdf(text: str) -> bytes:
    """A two-page PDF carrying `text` and ~50 kB of incompressible image: over THRESHOLD."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    for n in (1, 2):
        pdf.add_page()
        pdf.multi_cell(0, 8, f"Page {n}. {text}")
    image = Image.frombytes("RGB", (130, 130), os.urandom(130 * 130 * 3))
    pdf.image(image, x=10, y=40, w=100)
    data = bytes(pdf.output())
    assert len(data) > THRESHOLD
    return data


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    with start_emulator() as running:
        yield running


def _generates(stats: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The billed generateContent requests: (by file, inline)."""
    by_file = [r for r in stats["requests"] if r["file_parts"]]
    inline = [r for r in stats["requests"] if not r["file_parts"]]
    return by_file, inline


async def test_a_large_pdf_goes_by_file_a_small_one_inline_booked_as_billed_then_deleted(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, emu: RunningEmulator,
) -> None:  # fmt: skip
    big = large_pdf("Orbital freight ledger for the quarter.")
    small = make_pdf(1, "A short note about invoices.")
    assert len(small) < THRESHOLD
    async with running_pipeline(emu, redis_url, key_prefix,
                                files_api_min_bytes=THRESHOLD) as rig:  # fmt: skip
        sub = await rig.submit(Upload("big.pdf", big), Upload("small.pdf", small))
        jobs = [await rig.finished(j) for j in sub.job_ids]
        rows = rig.calls()
    stats = emu.stats()
    assert [j.state for j in jobs] == [State.COMPLETE, State.COMPLETE], [j.error for j in jobs]
    by_file, inline = _generates(stats)
    # The large PDF: uploaded once, counted and answered from its file, no inline bytes.
    assert [(r["file_parts"], r["file_bytes"], r["inline_bytes"]) for r in by_file] == [
        (1, len(big), 0)
    ]
    assert by_file[0]["pdf_pages"] == 2
    assert stats["count_file_parts"] == 1
    # The small PDF still goes inline, in countTokens and generateContent alike.
    assert [r["inline_bytes"] for r in inline] == [len(small)]
    assert stats["count_inline_bytes"] == len(small)
    assert stats["largest_request_bytes"] < THRESHOLD  # no body carried the large PDF
    assert stats["files"] == {"uploads": 1, "deleted": 1, "downloads": 0, "live": 0}
    assert all(r.outcome == "ok" for r in rows) and len(rows) == 2
    assert_ledger_is_the_bill(rows, stats)  # tokens and dollars as the emulator billed


async def test_a_503_is_retried_with_the_same_file_paid_once_and_nothing_left(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, emu: RunningEmulator,
) -> None:  # fmt: skip
    big = large_pdf("Heliotrope shipping manifest.")
    set_faults(emu, {"kind": "unavailable", "when": "Heliotrope", "times": 1})
    async with running_pipeline(emu, redis_url, key_prefix,
                                files_api_min_bytes=THRESHOLD) as rig:  # fmt: skip
        sub = await rig.submit(Upload("manifest.pdf", big))
        job = await rig.finished(sub.job_ids[0])
        rows = rig.calls()
    stats = emu.stats()
    assert job.state == State.COMPLETE, job.error
    assert stats["generate_requests"] == 2 and stats["by_status"]["503"] == 1
    assert stats["billed_total"]["requests"] == 1 and stats["billed_repeats"] == 0
    assert stats["files"]["uploads"] == 1  # the retry cited the same file
    assert stats["files"]["deleted"] == 1 and stats["files"]["live"] == 0
    assert sorted(r.outcome for r in rows) == ["error", "ok"]
    assert_ledger_is_the_bill(rows, stats)


async def test_a_deleted_file_is_refused_and_a_second_delete_is_not_an_error(
    emu: RunningEmulator,
) -> None:
    provider = GeminiProvider(api_key=emu.api_key, base_url=emu.base_url,
                              files_min_bytes=THRESHOLD)  # fmt: skip
    parts = (Part.pdf(large_pdf("Cobalt audit.")), Part(text="Summarise."))
    request = LLMRequest(model=MODEL, parts=parts, max_output_tokens=256)
    files = provider.call_files(request)
    assert files is not None
    try:
        sent = await files.request()
        assert await provider.count_tokens(sent) > 2 * 500  # two PDF pages, from the file
        (uploaded,) = files.uploaded
        await provider.batches.files.delete(uploaded.name)  # gone before the call
        with pytest.raises(ProviderCallError) as refused:
            await provider.generate(sent)
        assert refused.value.failure.code == 403
        assert "may not exist" in refused.value.failure.message
        await files.release()  # already gone: tolerated
    finally:
        await provider.aclose()
    stats = emu.stats()
    assert stats["billed_total"]["requests"] == 0 and stats["files"]["live"] == 0
