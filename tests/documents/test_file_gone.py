"""A job's PDF file gone while the job runs (its store emptied, a disk cleaned): the document
ends as what happened, and the ledger agrees with it. Real queue, worker, pool, SQLite
ledger, and the real google-genai client over HTTP to the emulator; a thin wrapper around
the real provider removes the file, before or after a real call."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import redis
from fpdf import FPDF

from pipeline.llm.gemini import GeminiProvider
from pipeline.llm.provider import LLMRequest, LLMResponse
from pipeline.queue.job import Job, State
from tasks.submission import Upload
from tests.support.emulator import RunningEmulator, start_emulator
from tests.support.paid_rig import running_pipeline


def _pdf(pages: int, blank: set[int]) -> bytes:
    """`pages` pages with text, but the pages in `blank` (1-based), which have none."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    for n in range(1, pages + 1):
        pdf.add_page()
        if n not in blank:
            pdf.multi_cell(0, 8, f"Page {n}. Invoice from Acme Ltd to Bob Smith.")
    return bytes(pdf.output())


class RemovesFiles:
    """The real provider; removes the file a PDF part is read from `when` ("before" or
    "after") the real generateContent call."""

    def __init__(self, inner: GeminiProvider, when: str) -> None:
        self.inner, self.when = inner, when
        self.name, self.billed = inner.name, inner.billed
        self.removed: list[str] = []

    def _remove(self, request: LLMRequest) -> None:
        for part in request.parts:
            if part.path is not None and os.path.exists(part.path):
                os.unlink(part.path)
                self.removed.append(part.path)

    async def generate(self, request: LLMRequest) -> LLMResponse:
        if self.when == "before":
            self._remove(request)
        response = await self.inner.generate(request)
        if self.when == "after":
            self._remove(request)
        return response

    async def count_tokens(self, request: LLMRequest) -> int:
        return await self.inner.count_tokens(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    with start_emulator() as running:
        yield running


async def _run(emu: RunningEmulator, redis_url: str, prefix: str, pdf: bytes, when: str,
               **settings: Any) -> tuple[Job, list[Any], RemovesFiles]:  # fmt: skip
    async with running_pipeline(emu, redis_url, prefix, **settings) as rig:
        provider = RemovesFiles(rig.services.provider, when)  # type: ignore[arg-type]
        rig.services.caller.provider = provider
        sub = await rig.submit(Upload("doc.pdf", pdf))
        job = await rig.finished(sub.job_ids[0])
        await asyncio.sleep(0)
        return job, rig.calls(), provider


async def test_a_file_gone_after_the_paid_answer_leaves_the_document_analysed(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, sredis: redis.Redis,
    emu: RunningEmulator,
) -> None:  # fmt: skip
    """The pages without text are found in the inspection's read, before the call: the
    document used to end failed (bad input, file gone) after its answer was paid for,
    stored and used, while its ledger row said ok and nothing wasted."""
    job, rows, provider = await _run(emu, redis_url, key_prefix, _pdf(3, {2}), "after")
    assert provider.removed  # the file was gone before the job ended
    assert job.state == State.COMPLETE, job.error
    assert job.result["pages_without_text"] == [[2, 2]]
    assert [r.outcome for r in rows] == ["ok"]


async def test_a_split_documents_part_file_gone_after_its_answer_leaves_it_analysed(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, sredis: redis.Redis,
    emu: RunningEmulator,
) -> None:  # fmt: skip
    """The same for a document split into parts (560 tokens a page: 2 pages a part, 3 parts
    for 6 pages): the parent finds the pages without text and hands each part its own."""
    job, rows, provider = await _run(emu, redis_url, key_prefix, _pdf(6, {4, 5}), "after",
                                     context_budget_tokens=4096 + 1200)  # fmt: skip
    assert len(provider.removed) == 3  # each part's file, after its answer
    assert job.task == "reduce_analyses"
    assert job.state == State.COMPLETE, job.error
    assert job.result["pages_without_text"] == [[4, 5]]
    assert sorted(r.outcome for r in rows) == ["ok"] * 4  # 3 parts and the merge


async def test_a_file_gone_before_the_call_is_bad_input_and_costs_nothing(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, sredis: redis.Redis,
    emu: RunningEmulator,
) -> None:  # fmt: skip
    """A PDF file that is gone when its attempt reads it to send it: nothing was sent, so
    the document fails as bad input (the file is gone), not "the provider refused the
    request", and the attempt is booked at $0."""
    job, rows, provider = await _run(emu, redis_url, key_prefix, _pdf(2, set()), "before")
    assert provider.removed
    assert job.state == State.FAILED
    assert job.reason == "bad_input", job.error
    assert job.error is not None and "could not be read" in job.error, job.error
    assert emu.stats()["generate_requests"] == 0
    assert [(r.outcome, r.cost_usd) for r in rows] == [("error", Decimal(0))]
