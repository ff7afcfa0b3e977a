"""The offline provider: the Provider protocol answered by local analysis, never billed.

It reads the request's document parts — a PDF (`application/pdf`) or plain text
(`text/plain`) sent as data — and nothing else: text parts and the system instruction are
instructions for a model, and an analyzer that cannot follow instructions must not mistake
them for the document. Only a request that carries no document at all (a plain question,
as tests/support/llm_tasks.py's `ask` sends) has its text parts read, since they are then all the
material there is; the system instruction never is.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import time
from typing import Any

from pipeline.llm.offline.analysis import Analysis, analyze_pages
from pipeline.llm.offline.fill import fill_schema
from pipeline.llm.offline.pages import MODEL_VERSION
from pipeline.llm.provider import LLMRequest, LLMResponse, Usage

CHARS_PER_TOKEN = 4
DOCUMENT_TYPES = ("application/pdf", "text/plain")


def pdf_text(data: bytes) -> tuple[str, int]:
    """(text of all pages, page count) of a PDF; BadDocument when it cannot be read."""
    pages = pdf_pages(data)
    return "\n".join(pages), len(pages)


@functools.lru_cache(maxsize=4)
def pdf_pages(data: bytes) -> tuple[str, ...]:
    """Each page's text layer (PDFium, via tasks/pdf.py); "" for a page without one.

    Remembered for the last few documents: the caller counts a request's tokens and then
    sends it, and reading a long part twice would double the work for the same answer.
    """
    from pipeline.llm.offline.pdftext import extract_text

    return tuple(extract_text(data))


def document_pages(request: LLMRequest) -> tuple[list[str], int]:
    """(the pages of every document part in order, characters of the whole request).

    Without a document part, the text parts stand as the one page. The character count
    covers instructions too: it is what a model would have read, and so what the usage
    reports.
    """
    pages: list[str] = []
    texts: list[str] = []
    chars = len(request.system or "")
    for part in request.parts:
        if part.text is not None:
            texts.append(part.text)
            chars += len(part.text)
        elif part.has_bytes and part.mime_type == "application/pdf":
            found = pdf_pages(part.read())
            pages.extend(found)
            chars += sum(len(p) for p in found)
        elif part.has_bytes and part.mime_type == "text/plain":
            text = part.read().decode("utf-8", errors="replace")
            pages.append(text)
            chars += len(text)
    if not any(p.has_bytes and p.mime_type in DOCUMENT_TYPES for p in request.parts):
        pages = ["\n".join(texts)]
    return pages, chars


class OfflineProvider:
    """Implements the Provider protocol with local extractive analysis; never bills."""

    name = "offline"
    billed = False  # never bills: nothing reserved, every attempt booked at $0
    metered = False  # reaches no provider: takes none of Gemini's rate limits (unmetered.py)

    async def generate(self, request: LLMRequest) -> LLMResponse:
        started = time.perf_counter()
        # PDF parsing and ranking are CPU work: keep them off the event loop.
        pages, chars = await asyncio.to_thread(document_pages, request)
        analysis: Analysis = await asyncio.to_thread(analyze_pages, pages)
        data: Any = None
        if request.response_schema is not None:
            data = fill_schema(request.response_schema, analysis)
            answer = json.dumps(data, ensure_ascii=False)
        else:
            answer = analysis.summary
        usage = Usage(
            input_tokens=math.ceil(chars / CHARS_PER_TOKEN),
            output_tokens=math.ceil(len(answer) / CHARS_PER_TOKEN),
        )
        return LLMResponse(
            text=answer,
            usage=usage,
            model_version=MODEL_VERSION,
            latency_s=time.perf_counter() - started,
            data=data,
            raw={"analysis": analysis.as_dict()},
        )

    async def count_tokens(self, request: LLMRequest) -> int:
        _, chars = await asyncio.to_thread(document_pages, request)
        return math.ceil(chars / CHARS_PER_TOKEN)

    async def aclose(self) -> None:
        return None
