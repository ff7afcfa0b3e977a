"""The offline analyzer: a provider that needs no network and costs $0.

It exists so the main job runs on a fresh machine without a key. It reads only the
document's own text (PDFium), and each finding comes from a library made for it: LexRank
(sumy) for the summary and key points, YAKE for key phrases, dateparser for dates,
price-parser for amounts, py3langid for the language, cleanco's legal forms for
organisations, gender-guesser's first names for people. Everything is deterministic: the
same document always gives the same answer. The emulator (pipeline/llm/emulator/content.py)
answers with the same analysis.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.llm.offline.analysis import Analysis, analyze_pages, analyze_text
    from pipeline.llm.offline.fill import fill_schema
    from pipeline.llm.offline.pages import (
        MODEL_VERSION,
        OCR_NOTE,
        describe_pages,
        no_text_note,
        page_ranges,
    )
    from pipeline.llm.offline.provider import (
        CHARS_PER_TOKEN,
        OfflineProvider,
        document_pages,
        pdf_text,
    )
    from pipeline.llm.offline.summary import summarize
    from pipeline.llm.offline.text import page_units

# Each name is imported from its module on first use (PEP 562), not with the package: the
# worker's PDF pool processes import pipeline.llm.offline.pdftext alone, and importing the
# analyzer (numpy, sumy, YAKE, dateparser...) with it cost each of them ~13 MB of PSS.
_FROM = {
    "OCR_NOTE": "pages", "Analysis": "analysis", "analyze_pages": "analysis",
    "analyze_text": "analysis", "describe_pages": "pages", "no_text_note": "pages",
    "page_ranges": "pages", "fill_schema": "fill", "CHARS_PER_TOKEN": "provider",
    "MODEL_VERSION": "pages", "OfflineProvider": "provider", "document_pages": "provider",
    "pdf_text": "provider", "summarize": "summary", "page_units": "text",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _FROM.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "CHARS_PER_TOKEN",
    "MODEL_VERSION",
    "OCR_NOTE",
    "Analysis",
    "OfflineProvider",
    "analyze_pages",
    "analyze_text",
    "describe_pages",
    "document_pages",
    "fill_schema",
    "no_text_note",
    "page_ranges",
    "page_units",
    "pdf_text",
    "summarize",
]
