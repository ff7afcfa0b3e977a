"""Gemini's inline request limit checked on each part's real request, not an average
(field case 16), through google-genai against an emulator that refuses bodies over the
limit with Google's 400. The limit is shrunk (to tens of kB) so the PDFs stay small."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import redis
from fpdf import FPDF
from PIL import Image

from pipeline.llm.pricing import PriceTable
from pipeline.queue.job import State
from tasks.estimate import document_bound
from tasks.pdf import split_pages
from tasks.plan import (
    MAX_OUTPUT_TOKENS,
    OUTPUT_BOUND_TOKENS,
    analyze_prompt,
    analyze_request,
    chunk_ranges,
    prompt_tokens,
)
from tasks.submission import Upload
from tests.support.emulator import RunningEmulator, start_emulator
from tests.support.paid_rig import assert_ledger_is_the_bill, running_pipeline

MODEL = "gemini-3.5-flash-lite"
LIMIT = 72_000  # bytes of one generateContent body


def pdf_with_noise(pages: int, noise_px: dict[int, int]) -> bytes:
    """A PDF whose page n carries an incompressible RGB image noise_px[n] pixels square
    (about 3 * side² bytes), so its pages weigh very different amounts."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    for n in range(1, pages + 1):
        pdf.add_page()
        pdf.multi_cell(0, 8, f"Page {n}. Quarterly revenue rose; costs fell.")
        side = noise_px.get(n)
        if side:
            image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
            pdf.image(image, x=10, y=30, w=100)
    return bytes(pdf.output())


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    with start_emulator(max_request_bytes=LIMIT) as running:
        yield running


def _request_sizes(data: bytes, pages: int, ranges: list[tuple[int, int]]) -> list[int]:
    parts = split_pages(data, ranges)
    return [
        analyze_request(MODEL, analyze_prompt(), part, filename="mixed.pdf", page_count=pages,
                        first_page=first, last_page=last).payload_bytes()
        for (first, last), part in zip(ranges, parts, strict=True)
    ]  # fmt: skip


async def test_a_part_over_the_limit_is_split_again_before_anything_is_sent(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, sredis: redis.Redis,
    emu: RunningEmulator,
) -> None:  # fmt: skip
    data = pdf_with_noise(6, {1: 40, 2: 120, 3: 40, 4: 40, 5: 40, 6: 40})
    planned = chunk_ranges(6, len(data), MODEL, 200_000, LIMIT)
    assert max(_request_sizes(data, 6, planned)) > LIMIT  # the average plan would be refused
    prices, at = PriceTable.load(), datetime.now(UTC)
    async with running_pipeline(emu, redis_url, key_prefix,
                                max_inline_request_bytes=LIMIT) as rig:  # fmt: skip
        # what the dry run and the submit-time budget warning quote for this document
        quoted = await document_bound(
            Upload("mixed.pdf", data), 6, MODEL, rig.services.provider.count_tokens, prices,
            at, context_budget_tokens=rig.client.settings.context_budget_tokens,
            max_request_bytes=LIMIT)  # fmt: skip
        counted_before = emu.stats()["requests_total"]
        sub = await rig.submit(Upload("mixed.pdf", data))
        assert sub.documents[0].status == "queued", sub.documents[0].reason
        job = await rig.finished(sub.job_ids[0])
        rows = rig.calls()
    stats = emu.stats()
    # The quote planned the requests the worker sent (the heavy page's part split again),
    # and each map call's worst case is the worker's reservation for it.
    maps = [r for r in rows if not r.job_id.endswith("-reduce")]
    assert quoted["calls"] == len(maps) + 1 == stats["generate_requests"]
    assert quoted["largest_counted_call_usd"] == max(r.estimated_cost_usd for r in maps)
    merge_tokens = len(maps) * MAX_OUTPUT_TOKENS + prompt_tokens(analyze_prompt())
    merge_usd = prices.worst_case_cost(MODEL, merge_tokens, OUTPUT_BOUND_TOKENS, at)
    assert quoted["worst_case_usd"] - merge_usd == sum(r.estimated_cost_usd for r in maps)
    assert quoted["input_tokens"] - merge_tokens == sum(r.input_tokens for r in maps)
    assert counted_before == len(maps)  # the quote counted each map request, generated none
    assert job.state == State.COMPLETE, job.error
    assert job.result is not None and job.result["page_count"] == 6
    assert stats["by_status"].get("400") is None  # nothing refused for its size
    sent = stats["requests"]
    assert stats["largest_request_bytes"] <= LIMIT
    assert max(r["bytes"] for r in sent) > LIMIT // 2  # the heavy page went on its own
    assert sum(r["pdf_pages"] for r in sent) == 6  # every page went, each once
    assert len(sent) > len(planned) + 1  # more parts than the average plan, plus the merge
    assert all(r.outcome == "ok" for r in rows)
    assert_ledger_is_the_bill(rows, stats)


async def test_a_page_that_can_never_fit_is_refused_at_submit_with_the_reason(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, sredis: redis.Redis,
    emu: RunningEmulator,
) -> None:  # fmt: skip
    data = pdf_with_noise(3, {2: 200})  # page 2 alone is ~120 kB
    async with running_pipeline(emu, redis_url, key_prefix,
                                max_inline_request_bytes=LIMIT) as rig:  # fmt: skip
        sub = await rig.submit(Upload("poster.pdf", data))
    (doc,) = sub.documents
    assert doc.status == "skipped" and doc.job_id is None
    assert doc.reason is not None
    assert "page 2" in doc.reason and "no split can make it fit" in doc.reason
    assert emu.stats()["requests_total"] == 0  # nothing counted, nothing paid
