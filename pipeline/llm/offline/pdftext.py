"""A PDF's text layer, read with PDFium (pypdfium2): about 3x faster per page than pypdf and
lighter on long files (`python bench/extraction.py`). The offline analyzer reads documents
with it, and the document tasks (tasks/pdf.py) use it for the same purpose.
"""

from __future__ import annotations

import logging
import re
import threading

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from pipeline.errors import BadDocument
from pipeline.llm.offline.text import has_text

log = logging.getLogger(__name__)

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffe\uffff]")
# PDFium is not thread-safe, not even across documents (pypdfium2's documentation): calls
# from threads of one process (the offline analyzer reads PDFs in a thread) go one at a time.
_PDFIUM_LOCK = threading.Lock()


def extract_text(data: bytes, first_page: int = 1, last_page: int | None = None) -> list[str]:
    """The text layer of pages first_page..last_page (1-based, inclusive), one string each.

    Read with PDFium; lines end in "\n". A page without a text layer (a scan) gives "". A
    page PDFium cannot decode also gives "" rather than failing the document: the analysis
    can still use the other pages. Raises BadDocument for an unreadable or password-locked
    file and ValueError for a page range outside the document.
    """
    with _PDFIUM_LOCK:
        document = _open_pdfium(data)
        try:
            count = len(document)
            if count == 0 and (first_page, last_page) == (1, None):
                return []
            last = count if last_page is None else last_page
            check_page_range(first_page, last, count)
            return [_page_text(document, index) for index in range(first_page - 1, last)]
        finally:
            document.close()


def pages_without_text(data: bytes) -> list[int]:
    """1-based numbers of the pages whose text layer holds no word (scans, photos)."""
    return [n for n, text in enumerate(extract_text(data), start=1) if not has_text(text)]


def _open_pdfium(data: bytes, name: str = "the file") -> pdfium.PdfDocument:
    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if getattr(exc, "err_code", None) == pdfium_c.FPDF_ERR_PASSWORD:
            message = f"{name} is encrypted; remove the password and submit again"
            raise BadDocument(message) from None
        raise corrupt_error(name, exc) from None


def _page_text(document: pdfium.PdfDocument, index: int) -> str:
    try:
        page = document[index]
        try:
            textpage = page.get_textpage()
            try:
                text = textpage.get_text_bounded()
            finally:
                textpage.close()
        finally:
            page.close()
    except pdfium.PdfiumError as exc:  # one bad page must not lose the other pages
        log.warning("page %d: no text extracted (%s); treating it as blank", index + 1, exc)
        return ""
    # PDFium ends lines with CRLF and marks soft hyphens and unmapped glyphs with control
    # characters; neither is text a reader would see.
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def check_page_range(first: int, last: int, count: int) -> None:
    if not 1 <= first <= last <= count:
        raise ValueError(f"page range {first}-{last} is outside 1-{count}")


def corrupt_error(name: str, exc: Exception) -> BadDocument:
    detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return BadDocument(
        f"{name} is corrupt and could not be read ({detail}); "
        "export it again from the program that made it, or repair it (e.g. qpdf) and resubmit"
    )
