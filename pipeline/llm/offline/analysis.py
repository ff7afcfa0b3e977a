"""The offline analysis of one document: its pages' own text in, an `Analysis` out.

Only the document is read, never the instructions sent with it: a prompt is written for a
model, and an extractive analyzer that read it would quote it back as the document's
content. Pages without a text layer are reported, not guessed at: OCR is not available
offline, so a scan gets no summary, no type and no entities, only the note that says so.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.llm.offline import classify, entities
from pipeline.llm.offline.pages import no_text_note
from pipeline.llm.offline.summary import stop_words, summarize
from pipeline.llm.offline.text import document_blocks, document_units, has_text, spread

_TOKEN = re.compile(r"\S*[^\W_]\S*")  # a whitespace-separated token with a letter or digit
SENTENCE_PAGES = 60  # pages of a long document whose sentences are ranked


@dataclass
class Analysis:
    """What the offline analyzer found; `as_dict()` is its JSON form (units left out)."""

    summary: str
    key_points: list[str]
    keywords: list[str]
    entities: dict[str, list[str]]  # people, organizations, dates, amounts, emails
    language: str  # ISO 639-1, or "unknown"
    document_type: str  # classify.document_type's kinds, "other" or "unknown"
    page_count: int
    word_count: int
    pages_without_text: list[int] = field(default_factory=list)  # 1-based
    units: list[str] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("units")
        return data


def analyze_pages(pages: list[str], first_page: int = 1) -> Analysis:
    """Analyse a document (or a page range of one) from its pages' text, one string each.

    `first_page` numbers the pages in `pages_without_text` when they are a later range of a
    longer document.
    """
    blank = [first_page + i for i, page in enumerate(pages) if not has_text(page)]
    if len(blank) == len(pages):
        return _nothing_to_read(len(pages), blank)
    read = [page for page in pages if has_text(page)]
    # Entities are searched on every page (cheap); sentences, which the rankers need, are
    # split on a sample of pages spread over a long document (segtok: ~15 ms a page).
    blocks = document_blocks(read)
    text = "\n".join(blocks)  # one block a line: no name runs across two
    units = document_units(spread(read, SENTENCE_PAGES))
    language = classify.detect_language("\n".join(units))
    summary, key_points, phrases = summarize(units, language)
    stops = stop_words(language)
    organizations = entities.find_organizations(text, stops)
    return Analysis(
        summary=summary,
        key_points=key_points,
        keywords=phrases,
        entities={
            "people": entities.find_people(text, stops, organizations),
            "organizations": organizations,
            "dates": entities.find_dates(blocks, language),
            "amounts": entities.find_amounts(text),
            "emails": entities.find_emails(text),
        },
        language=language,
        document_type=classify.document_type(read[0]),
        page_count=len(pages),
        word_count=sum(_word_count(page) for page in pages),
        pages_without_text=blank,
        units=units,
    )


def _word_count(page: str) -> int:
    return len(_TOKEN.findall(page))


def analyze_text(text: str, page_count: int = 0) -> Analysis:
    """Analyse plain text as one page; `page_count` is reported as given."""
    if not has_text(text):
        return _nothing_to_read(page_count, [])
    analysis = analyze_pages([text])
    analysis.page_count = page_count
    return analysis


def _nothing_to_read(page_count: int, blank: list[int]) -> Analysis:
    return Analysis(
        summary=no_text_note(blank) if blank else "",
        key_points=[],
        keywords=[],
        entities={k: [] for k in ("people", "organizations", "dates", "amounts", "emails")},
        language=classify.UNKNOWN,
        document_type=classify.UNKNOWN,
        page_count=page_count,
        word_count=0,
        pages_without_text=blank,
    )
