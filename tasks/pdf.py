"""PDF work that runs in the worker's process pool: inspect, extract text, split, plan chunks.

Everything here is a plain function of bytes and ints returning plain values, so it crosses
a multiprocessing boundary as-is, and none of it touches the event loop. Two parsers, each
where it is the better tool: PDFium (pypdfium2) reads the text layer, about three times
faster than pypdf per page with less memory (bench/extraction.py has the figures); pypdf
inspects metadata and writes the split parts, which PDFium's bindings do not do as simply.
Parsing happens in recycled pool processes because pypdf's memory grows with the document:
it caches every object it parses.

Every way a file can be unusable ends in `BadDocument` with a message that says what is
wrong and what to do, because these messages reach the person who uploaded the file.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pypdf import PasswordType, PdfReader, PdfWriter

from pipeline.errors import BadDocument, RequestTooLarge
from pipeline.llm.offline.pdftext import (
    check_page_range,
    corrupt_error,
    extract_text,
    pages_without_text,
)
from pipeline.llm.provider import file_gone

log = logging.getLogger(__name__)

MB = 1024 * 1024
# Pages read through one pypdf reader before a fresh one drops its cache of parsed objects.
_PAGES_PER_READER = 100
# Gemini's limit on a whole inline request ("total request < 20 MB"), base64 included.
MAX_INLINE_BYTES = 20 * MB
# Room in a request for the prompt text, schema and JSON framing around the PDF.
_REQUEST_OVERHEAD_BYTES = 256 * 1024
# Gemini reads at most 1,000 pages of one document part.
MAX_PAGES_PER_CALL = 1000
# Tokens per chunk. Models take ~1M, but 200k keeps a chunk under the >200k long-context
# price tier of Pro models and bounds what one failed attempt costs to retry.
DEFAULT_MAX_TOKENS = 200_000
# Gemini 2.x counts 258 tokens per PDF page; 3.x at the default MEDIUM resolution, 560.
TOKENS_PER_PAGE_V2 = 258
TOKENS_PER_PAGE_V3 = 560

_HEADER_WINDOW = 1024  # the PDF spec lets %PDF- start anywhere in the first 1 KiB
_TAIL_WINDOW = 4096  # where %%EOF must be; generous, writers append junk after it
_OBJECT = re.compile(rb"\d+\s+\d+\s+obj\b")
_METADATA_MAX_CHARS = 500


@dataclass(frozen=True)
class PdfInfo:
    """What we learn from a PDF without rendering it; JSON-friendly via `to_dict()`."""

    page_count: int
    size_bytes: int
    sha256: str
    pdf_version: str  # from the header, e.g. "1.7"
    encrypted: bool  # True when it was encrypted but opened with the empty password
    title: str | None = None
    author: str | None = None
    subject: str | None = None
    creator: str | None = None
    producer: str | None = None
    created: str | None = None  # ISO 8601, when the metadata has a readable date

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def inspect_pdf(
    data: bytes, max_bytes: int, max_pages: int, name: str = "the file",
    max_part_bytes: int | None = None,
) -> PdfInfo:  # fmt: skip
    """Check that `data` is a PDF we can analyse and describe it; BadDocument otherwise.

    This is the one validity rule: submit, the HTTP API and the worker all call it, so a
    file accepted at the door is one the worker can send. A PDF encrypted with an empty
    user password is accepted (pypdf opens it; the worker sends a decrypted copy); one that
    needs a password is refused. With `max_part_bytes` (the base64 bytes a request has room
    for beside its prompt), a page that alone needs more is refused as RequestTooLarge:
    no split can make it fit an inline request.
    """
    size = len(data)
    if size == 0:
        raise BadDocument(f"{name} is empty (0 bytes); upload the PDF again")
    if size > max_bytes:
        raise BadDocument(
            f"{name} is {size / MB:.1f} MB, over the {max_bytes / MB:.1f} MB limit; "
            "split it into smaller PDFs or raise PIPELINE_MAX_UPLOAD_BYTES"
        )
    header_at = data.find(b"%PDF-", 0, _HEADER_WINDOW)
    if header_at < 0:
        raise BadDocument(f"{name} is not a PDF ({_sniff(data)}); submit a PDF file")
    if b"%%EOF" not in data[-_TAIL_WINDOW:]:
        if not _OBJECT.search(data):
            raise BadDocument(
                f"{name} is corrupt: it starts like a PDF but contains no PDF objects; "
                "export it again from the program that made it"
            )
        raise BadDocument(
            f"{name} is truncated: it ends without the %%EOF marker ({size} bytes "
            "received); the upload or download was probably cut short, send the whole file"
        )
    reader = _open(data, name)
    try:
        page_count = len(reader.pages)
    except Exception as exc:  # pypdf raises many types for a broken page tree
        raise corrupt_error(name, exc) from None
    if page_count == 0:
        raise BadDocument(f"{name} has no pages; check that it is the right file")
    if page_count > max_pages:
        raise BadDocument(
            f"{name} has {page_count} pages, over the limit of {max_pages}; "
            "split it into smaller PDFs and submit those"
        )
    if max_part_bytes is not None and base64_len(size) > max_part_bytes:
        _refuse_oversized_pages(data, page_count, max_part_bytes, name)
    meta = _metadata(reader)
    return PdfInfo(
        page_count=page_count,
        size_bytes=size,
        sha256=hashlib.sha256(data).hexdigest(),
        pdf_version=_header_version(data, header_at),
        encrypted=bool(reader.is_encrypted),
        **meta,
    )


def _read(source: bytes | str) -> bytes:
    """`source` itself, or the bytes of the file at the path it names, read here (in the
    pool process): a worker's job passes its stored PDF's path, so the PDF crosses the
    process boundary as a path, not as base64 JSON, and the job never holds it. Raises
    DocumentMissing when the file cannot be read."""
    if isinstance(source, bytes):
        return source
    try:
        with open(source, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise file_gone(source, exc) from None


def inspect_for_analysis(source: bytes | str, max_bytes: int, max_pages: int, name: str,
                         find_blank: bool) -> dict[str, Any]:  # fmt: skip
    """`inspect_pdf`'s dict of a path (read in this process) or of bytes, plus with
    `find_blank` its `pages_without_text` (1-based)
    from the same read: a job learns all it needs from its file before any paid call, so
    nothing reads the file after the answer (which a file gone by then would fail)."""
    data = _read(source)
    info = inspect_pdf(data, max_bytes, max_pages, name).to_dict()
    info["pages_without_text"] = pages_without_text(data) if find_blank else None
    return info


def is_encrypted(data: bytes) -> bool:
    """Whether `data` (a PDF the validity rule accepted) is encrypted with the empty
    password, so the worker sends its decrypted copy; reads the trailer, not the pages."""
    try:
        return bool(PdfReader(io.BytesIO(data), strict=False).is_encrypted)
    except Exception as exc:  # the validity rule opened it: say what failed if not now
        raise corrupt_error("the file", exc) from None


def split_file(source: bytes | str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    """`split_pages` of a path (read in this process) or of bytes."""
    return split_pages(_read(source), ranges)


def pages_without_text_file(source: bytes | str) -> list[int]:
    """`pages_without_text` of a path (read in this process) or of bytes."""
    return pages_without_text(_read(source))


def split_pages(data: bytes, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    """Each (first, last) range (1-based, inclusive) written as a standalone PDF.

    Outputs are never encrypted, even when the source opened with the empty password,
    so the parts can be sent to a model as they are.
    """
    count = _page_count(data)
    for first, last in ranges:
        check_page_range(first, last, count)
    parts: list[bytes] = []
    for first, last in ranges:
        # One reader per part: the writer holds clones of the part's pages anyway, so a
        # fresh reader per part bounds memory as well as recycling inside it would.
        reader = _open(data)
        writer = PdfWriter()
        for index in range(first - 1, last):
            writer.add_page(reader.pages[index])
        buffer = io.BytesIO()
        writer.write(buffer)
        parts.append(buffer.getvalue())
    return parts


def base64_len(size: int) -> int:
    """Bytes of `size` bytes once base64-encoded, as inline data travels."""
    return 4 * math.ceil(size / 3)


def page_sizes(data: bytes) -> list[int]:
    """The size in bytes of each page written as a standalone PDF (what a one-page part
    weighs), one reader per `_PAGES_PER_READER` pages."""
    sizes: list[int] = []
    for reader, index in _walk(data, 0, _page_count(data)):
        writer = PdfWriter()
        writer.add_page(reader.pages[index])
        buffer = io.BytesIO()
        writer.write(buffer)
        sizes.append(len(buffer.getvalue()))
    return sizes


def _refuse_oversized_pages(data: bytes, page_count: int, max_part_bytes: int, name: str) -> None:
    too_big = [(n, size) for n, size in enumerate(page_sizes(data), 1)
               if base64_len(size) > max_part_bytes]  # fmt: skip
    if not too_big:
        return
    shown = ", ".join(f"page {n} ({base64_len(size) / MB:.1f} MB)" for n, size in too_big[:5])
    raise RequestTooLarge(
        f"{name}: {shown} alone {'is' if len(too_big) == 1 else 'are'} over the "
        f"{max_part_bytes / MB:.1f} MB a request has room for (inline request limit, base64 "
        "included); no split can make it fit. Reduce the page's image resolution (e.g. print "
        "to PDF at a lower quality) or remove it, and submit again"
    )


def tokens_per_page(model: str) -> int:
    """Gemini's per-page token charge for a model family (2.x: 258; 3.x and later: 560)."""
    match = re.match(r"gemini-(\d+)", model)
    if match and int(match.group(1)) < 3:
        return TOKENS_PER_PAGE_V2
    return TOKENS_PER_PAGE_V3


def plan_chunks(
    page_count: int,
    pdf_bytes_len: int,
    tokens_per_page: int = TOKENS_PER_PAGE_V3,
    max_inline_bytes: int = MAX_INLINE_BYTES,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_pages: int = MAX_PAGES_PER_CALL,
) -> list[tuple[int, int]]:
    """Page ranges (1-based, inclusive) such that each map call fits the request limits.

    One range when the whole document fits. Otherwise the fewest chunks that respect all
    three limits (inline bytes, tokens, pages per call), made as equal as possible so the
    parallel map calls finish together. Bytes per page are estimated from the average;
    each part carries its own copy of shared fonts, so callers should check a split part's
    real size and re-plan that part if it is still too big. A single page is never split:
    a one-page PDF larger than the inline limit needs the Files API.
    """
    if page_count <= 0:
        raise ValueError("page_count must be at least 1")
    if pdf_bytes_len < 0 or tokens_per_page <= 0 or max_tokens <= 0 or max_pages <= 0:
        raise ValueError("sizes and limits must be positive")
    overhead = min(_REQUEST_OVERHEAD_BYTES, max_inline_bytes // 4)
    raw_budget = max(1, (max_inline_bytes - overhead) * 3 // 4)  # base64 is 4/3
    bytes_per_page = max(1.0, pdf_bytes_len / page_count)
    per_chunk = min(
        math.floor(raw_budget / bytes_per_page),
        max_tokens // tokens_per_page,
        max_pages,
    )
    per_chunk = max(1, per_chunk)
    chunks = math.ceil(page_count / per_chunk)
    base, extra = divmod(page_count, chunks)
    ranges: list[tuple[int, int]] = []
    first = 1
    for i in range(chunks):
        size = base + (1 if i < extra else 0)
        ranges.append((first, first + size - 1))
        first += size
    return ranges


# -- helpers ---------------------------------------------------------------------------


def _walk(data: bytes, start: int, stop: int) -> Iterator[tuple[PdfReader, int]]:
    """(reader, page index) for indexes start..stop-1, with a fresh reader every so often.

    Dropping the reader drops pypdf's cache of parsed objects, so memory follows the
    window of pages in hand rather than the whole document.
    """
    reader: PdfReader | None = None
    for index in range(start, stop):
        if reader is None or (index - start) % _PAGES_PER_READER == 0:
            reader = _open(data)
        yield reader, index


def _open(data: bytes, name: str = "the file") -> PdfReader:
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
    except Exception as exc:
        raise corrupt_error(name, exc) from None
    if reader.is_encrypted:
        try:
            opened = reader.decrypt("")
        except Exception as exc:  # unsupported handler, damaged /Encrypt dictionary
            raise BadDocument(
                f"{name} is encrypted in a way that cannot be opened ({exc}); "
                "remove the password and submit again"
            ) from None
        if opened == PasswordType.NOT_DECRYPTED:
            raise BadDocument(f"{name} is encrypted; remove the password and submit again")
    return reader


def _page_count(data: bytes) -> int:
    try:
        return len(_open(data).pages)
    except BadDocument:
        raise
    except Exception as exc:
        raise corrupt_error("the file", exc) from None


def _sniff(data: bytes) -> str:
    head = data[:16]
    kinds = {
        b"\x89PNG": "it is a PNG image",
        b"\xff\xd8\xff": "it is a JPEG image",
        b"GIF8": "it is a GIF image",
        b"PK\x03\x04": "it is a ZIP archive, e.g. a .docx or .xlsx",
        b"\xd0\xcf\x11\xe0": "it is an old Microsoft Office file",
        b"{\\rtf": "it is an RTF document",
    }
    for magic, kind in kinds.items():
        if head.startswith(magic):
            return kind
    sample = data[:_HEADER_WINDOW]
    if sample.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return "it is an HTML page"
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError:
        return "no %PDF- header"
    return "it is plain text"


def _header_version(data: bytes, at: int) -> str:
    match = re.match(rb"%PDF-(\d\.\d)", data[at : at + 8])
    return match.group(1).decode() if match else "unknown"


def _metadata(reader: PdfReader) -> dict[str, str | None]:
    fields: dict[str, str | None] = dict.fromkeys(
        ("title", "author", "subject", "creator", "producer", "created")
    )
    try:
        meta = reader.metadata
    except Exception:  # a broken /Info dictionary only costs us the metadata
        return fields
    if meta is None:
        return fields
    for key in ("title", "author", "subject", "creator", "producer"):
        try:
            fields[key] = _clean(getattr(meta, key))
        except Exception:
            fields[key] = None
    try:
        created = meta.creation_date
        fields["created"] = created.isoformat() if created else None
    except Exception:  # malformed date strings are common in the wild
        fields["created"] = None
    return fields


def _clean(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).replace("\x00", "").strip()
    return text[:_METADATA_MAX_CHARS] or None


__all__ = ["extract_text", "pages_without_text"]  # read here by tasks and the pool
