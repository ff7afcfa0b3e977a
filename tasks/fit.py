"""Page ranges whose *real* request fits the provider's inline request limit.

plan_chunks sizes parts from the document's average bytes per page, but pages are not
average: one scanned page can hold most of a file's bytes, and each split part carries its
own copy of shared fonts. A hard limit checked with an average sends a 21 MB request that is
refused with a 400 after other parts were already paid for (field case 16). So each part's
request is built and measured (`LLMRequest.payload_bytes`: base64 PDF, prompt, schema)
before anything is sent; a part over the limit is split in two and measured again, and a
single page that alone is over it is refused (`RequestTooLarge`). Submit applies the same
rule to single pages (tasks/pdf.py), so such a file is normally refused at the door.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipeline.errors import RequestTooLarge
from pipeline.llm.provider import LLMRequest, Part
from pipeline.queue.context import JobContext

MB = 1024 * 1024


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


async def fit_parts(
    ctx: JobContext,
    whole: Part,
    page_count: int,
    ranges: list[tuple[int, int]],
    build: Callable[[Part, int, int], LLMRequest],
    max_request_bytes: int,
) -> list[Fitted]:
    """`ranges` (planned from averages) made to fit: each part's request measured, a part
    over `max_request_bytes` split in halves until it fits, in page order.

    `whole` is the document (by path or bytes); it is its own part when it fits in one
    call, else the parts are split from it (in the process pool) as bytes. `build(part,
    first, last)` makes the request for a part. Raises RequestTooLarge for a single page
    that cannot fit.
    """
    if ranges == [(1, page_count)]:
        parts = [whole]
    else:
        split = await ctx.run_cpu("tasks.pdf:split_file", source_of(whole),
                                  [list(r) for r in ranges])  # fmt: skip
        parts = [Part.pdf(p) for p in split]
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
        halves = await ctx.run_cpu(
            "tasks.pdf:split_file", source_of(whole), [[first, middle], [middle + 1, last]]
        )
        pending[0:0] = [((first, middle), Part.pdf(halves[0])),
                        ((middle + 1, last), Part.pdf(halves[1]))]  # fmt: skip
    return fitted
