"""A page's text layer as the units the analyzer ranks: sentences and standalone lines.

PDF text comes as lines. A paragraph's lines run to the full width of its column; a
heading or a paragraph's last line stops short, and a table row is mostly figures. So a
line much shorter than the page's usual full line, or a row of figures, ends a block, and
a block is split into sentences by `segtok`
(a rule-based segmenter for European languages that needs no trained data). That keeps
"Total due EUR 25,662.35" a unit of its own instead of gluing it to the next paragraph.
"""

from __future__ import annotations

import re

from segtok.segmenter import split_multi
from segtok.tokenizer import word_tokenizer

# A line shorter than this share of the page's typical full line stands apart: it ends its
# block, and after a closed sentence it starts one (a heading).
SHORT_LINE_RATIO = 0.8
_WORD = re.compile(r"\w{2,}")
_SPACE = re.compile(r"\s+")
_CLOSERS = (".", "!", "?", ":", ";")
_DIGIT = re.compile(r"\d")
_FIGURE = re.compile(r"\S*\d\S*")
_HYPHENATED = re.compile(r"[A-Za-zÀ-ÖØ-öø-ÿ]-$")


def has_text(page: str) -> bool:
    """Whether a page's text layer holds at least one word (a scan's holds none)."""
    return _WORD.search(page) is not None


def page_blocks(page: str) -> list[str]:
    """The page's paragraphs, headings and rows, in reading order, whitespace collapsed."""
    lines = [line.strip() for line in page.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return []
    widths = sorted(len(line) for line in lines)
    full = widths[(len(widths) - 1) * 9 // 10]
    blocks: list[str] = []
    block = ""
    for line in lines:
        short = len(line) < SHORT_LINE_RATIO * full or is_table_row(line)
        if short and block[-1:] in _CLOSERS:
            blocks.append(block)  # a heading after a paragraph's full last line
            block = ""
        if block.endswith("-") and _HYPHENATED.search(block[-2:]) and line[:1].islower():
            block = block[:-1] + line  # a word hyphenated across the line break
        else:
            block = f"{block} {line}" if block else line
        if short:
            blocks.append(block)
            block = ""
    if block:
        blocks.append(block)
    return [flat for b in blocks if _WORD.search(flat := _SPACE.sub(" ", b).strip())]


def page_units(page: str) -> list[str]:
    """Sentences and standalone lines of one page, in reading order, whitespace collapsed."""
    return [unit for block in page_blocks(page) for unit in _sentences(block)]


def is_table_row(line: str) -> bool:
    """A line of figures rather than prose (a table row runs to full width like prose
    does): it ends in a figure, and at least two of its tokens, a third of them, are."""
    if line.endswith(".") or not _DIGIT.search(line[-12:]):
        return False
    tokens = line.split()
    numeric = len(_FIGURE.findall(line))
    return _DIGIT.search(tokens[-1]) is not None and numeric >= 2 and numeric * 3 >= len(tokens)


def _sentences(flat: str) -> list[str]:
    # join_on_lowercase: "Globex Corporation Inc. signed" is one sentence, not two.
    return [s.strip() for s in split_multi(flat, join_on_lowercase=True) if _WORD.search(s)]


def document_units(pages: list[str]) -> list[str]:
    """Every page's units, each distinct unit once (running headers and footers repeat)."""
    return list(dict.fromkeys(unit for page in pages for unit in page_units(page)))


def document_blocks(pages: list[str]) -> list[str]:
    """Every page's blocks, each distinct one once: the cheap reading (no sentence
    splitting) that entity search runs over on a document of any length."""
    return list(dict.fromkeys(block for page in pages for block in page_blocks(page)))


def words(unit: str) -> list[str]:
    """The word tokens of a unit (segtok), punctuation dropped."""
    return [w for w in word_tokenizer(unit) if any(c.isalnum() for c in w)]


def spread(items: list[str], cap: int) -> list[str]:
    """At most `cap` items taken evenly across the list, in order: a long document's sample
    covers its whole length rather than its first pages."""
    if len(items) <= cap:
        return items
    return [items[i * len(items) // cap] for i in range(cap)]


def is_prose(unit: str) -> bool:
    """A sentence rather than a heading or table row: several words, closed by punctuation."""
    return unit[-1:] in ".!?" and len(words(unit)) >= 6


class SegtokTokenizer:
    """The tokenizer sumy's document model asks for, backed by segtok.

    sumy's own Tokenizer loads NLTK's punkt data, which is a download; segtok ships its
    rules in the package.
    """

    def __init__(self, language: str) -> None:
        self.language = language

    def to_sentences(self, paragraph: str) -> list[str]:
        return [s for s in split_multi(paragraph, join_on_lowercase=True) if s.strip()]

    def to_words(self, sentence: str) -> list[str]:
        return words(sentence)
