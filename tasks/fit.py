"""Page ranges whose *real* request fits the provider's inline request limit.

plan_chunks sizes parts from the document's average bytes per page, but pages are not
average: one scanned page can hold most of a file's bytes, and each split part carries its
own copy of shared fonts. A hard limit checked with an average sends a 21 MB request that is
refused with a 400 after other parts were already paid for (field case 16). So each part's
request is built and measured (`LLMRequest.payload_bytes`: base64 PDF, prompt, schema)
before anything is sent; a part over the limit is split in two and measured again, and a
single page that alone is over it is refused (`RequestTooLarge`). Submit applies the same
rule to single pages (tasks/pdf.py), so such a file is normally refused at the door.

`plan_requests` is the one planning of a document's requests: the worker runs it before its
calls (tasks/analyze.py) and the dry run and the submit-time budget warning before pricing
them (tasks/estimate.py), each with its own way to split a PDF (`Split`: the worker's process
pool, or a thread), so the requests priced are the requests the worker sends and reserves.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pipeline.errors import RequestTooLarge
from pipeline.llm.provider import LLMRequest, Part
from tasks.pdf import split_file
from tasks.plan import analyze_prompt, analyze_request, chunk_ranges

MB = 1024 * 1024

# How a PDF (path or bytes) is cut into standalone PDFs of these 1-based inclusive page
# ranges: tasks/pdf.py's `split_file`, run where the caller runs CPU-heavy work.
Split = Callable[[bytes | str, list[list[int]]], Awaitable[list[bytes]]]


async def split_in_thread(source: bytes | str, ranges: list[list[int]]) -> list[bytes]:
    """`Split` on a thread of this process (the dry run and submit: no process pool)."""
    return await asyncio.to_thread(split_file, source, [(a, b) for a, b in ranges])


@dataclass(frozen=True)
class Fitted:
    """One part of a document and the request that sends it, measured to fit."""

    first: int  # 1-based, inclusive
    last: int
    part: Part  # the part as a standalone PDF (the whole document when it fits in one)
    request: LLMRequest


def source_of(part: Part) -> bytes | str:
    """What a pool function (tasks/pdf.py `*_file`) is given for a PDF part: its path when
    it is a file (read in the pool process), else its bytes."""
    if part.path is not None:
        return part.path
    assert part.data is not None
    return part.data


async def readable_copy(split: Split, pdf: Part, page_count: int, encrypted: bool) -> Part:
    """The PDF as every provider can read it, its page count known: an empty-password
    encrypted file (accepted by the validity rule) is sent as its decrypted copy (bytes), so
    the offline analyzer and Gemini see the same pages submit accepted (field case 14)."""
    if not encrypted:
        return dataclasses.replace(pdf, pages=page_count)
    parts = await split(source_of(pdf), [[1, page_count]])
    return Part(data=parts[0], mime_type="application/pdf", pages=page_count)


async def plan_requests(
    split: Split, pdf: Part, page_count: int, encrypted: bool, *, model: str, name: str,
    context_budget_tokens: int, max_request_bytes: int,
) -> list[Fitted]:  # fmt: skip
    """A checked PDF's (`encrypted`: opened with the empty password) map requests, in page
    order: its readable copy, cut into the ranges planned from its average page size
    (tasks/plan.chunk_ranges), each part's real request measured and split again until it
    fits (`fit_parts`). One request, carrying the readable PDF as given, when it fits one
    call. Raises RequestTooLarge for a page no request can carry."""
    prompt = analyze_prompt()
    whole = await readable_copy(split, pdf, page_count, encrypted)
    ranges = chunk_ranges(page_count, whole.byte_size, model, context_budget_tokens,
                          max_request_bytes)  # fmt: skip

    def build(part: Part, first: int, last: int) -> LLMRequest:
        return analyze_request(model, prompt, part, filename=name, page_count=page_count,
                               first_page=first, last_page=last)  # fmt: skip

    return await fit_parts(split, whole, page_count, ranges, build, max_request_bytes)


async def fit_parts(
    split: Split,
    whole: Part,
    page_count: int,
    ranges: list[tuple[int, int]],
    build: Callable[[Part, int, int], LLMRequest],
    max_request_bytes: int,
) -> list[Fitted]:
    """`ranges` (planned from averages) made to fit: each part's request measured, a part
    over `max_request_bytes` split in halves until it fits, in page order.

    `whole` is the document (by path or bytes); it is its own part when it fits in one
    call, else the parts are split from it (by `split`) as bytes. `build(part, first,
    last)` makes the request for a part. Raises RequestTooLarge for a single page
    that cannot fit.
    """
    if ranges == [(1, page_count)]:
        parts = [whole]
    else:
        parts = [Part.pdf(p) for p in await split(source_of(whole), [list(r) for r in ranges])]
    pending = list(zip(ranges, parts, strict=True))
    fitted: list[Fitted] = []
    while pending:
        (first, last), part = pending.pop(0)
        request = build(part, first, last)
        size = request.payload_bytes()
        if size <= max_request_bytes:
            fitted.append(Fitted(first, last, part, request))
            continue
        if first == last:
            raise RequestTooLarge(
                f"page {first}'s request is {size / MB:.2f} MB, over the "
                f"{max_request_bytes / MB:.2f} MB inline request limit; no split can make "
                "it fit: reduce the page's image resolution or remove it, and submit again"
            )
        middle = (first + last) // 2
        halves = await split(source_of(whole), [[first, middle], [middle + 1, last]])
        pending[0:0] = [((first, middle), Part.pdf(halves[0])),
                        ((middle + 1, last), Part.pdf(halves[1]))]  # fmt: skip
    return fitted
