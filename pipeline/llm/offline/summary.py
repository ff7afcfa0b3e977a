"""Which of the document's own sentences say the most: LexRank (sumy) and key phrases (YAKE).

LexRank (Erkan & Radev 2004) scores each unit by its centrality in the graph of units
that share words; the summary is the top prose sentences in reading order, the key points
the top units of any shape (a total line counts), each boosted by the YAKE key phrases
it carries. Both run on a sample of at most `RANKED_UNITS` units spread over the document,
because sumy's LexRank compares every pair of units in pure Python (150 units: ~0.5 s,
400: ~1.6 s).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy

from pipeline.llm.offline.text import SegtokTokenizer, is_prose, spread, words

SUMMARY_SENTENCES = 3
KEY_POINTS = 10
KEYPHRASES = 10
RANKED_UNITS = 150
MAX_UNIT_CHARS = 400  # a longer "sentence" is a table or a list run together: no summary
_KEYPHRASE_CHARS = 30_000

# ISO 639-1 -> the names sumy uses for its stop-word lists and NLTK's Snowball stemmers.
_SUMY_LANGUAGES = {
    "en": "english", "de": "german", "fr": "french", "es": "spanish", "it": "italian",
    "pt": "portuguese", "nl": "dutch", "sv": "swedish", "cs": "czech", "sk": "slovak",
    "pl": "polish", "el": "greek", "uk": "ukrainian", "ru": "russian", "da": "danish",
    "fi": "finnish", "no": "norwegian", "hu": "hungarian", "ro": "romanian",
}  # fmt: skip


@functools.cache
def stop_words(language: str) -> frozenset[str]:
    """sumy's stop-word list for an ISO 639-1 code (English when it has none)."""
    from sumy.utils import get_stop_words

    try:
        return frozenset(get_stop_words(_SUMY_LANGUAGES.get(language, "english")))
    except LookupError:
        return frozenset(get_stop_words("english"))


def _summarizer(language: str) -> Any:
    from sumy.nlp.stemmers import Stemmer, null_stemmer
    from sumy.summarizers.lex_rank import LexRankSummarizer

    class RatedLexRank(LexRankSummarizer):  # type: ignore[misc]
        """sumy's LexRank, keeping the ratings it computes instead of only the top N."""

        ratings: dict[Any, float] = {}  # noqa: RUF012 (set per call below)

        def _get_best_sentences(self, sentences: Any, count: Any, rating: Any,
                                *args: Any, **kwargs: Any) -> Any:  # fmt: skip
            self.ratings = dict(rating)
            return super()._get_best_sentences(sentences, count, rating, *args, **kwargs)

    try:
        stemmer: Any = Stemmer(_SUMY_LANGUAGES.get(language, "english"))
    except LookupError:
        stemmer = null_stemmer
    summarizer = RatedLexRank(stemmer)
    summarizer.stop_words = stop_words(language)
    return summarizer


def rank(units: list[str], language: str) -> list[tuple[str, float]]:
    """(unit, LexRank rating) for a sample of the units, best first; ties in reading order."""
    from sumy.models.dom import ObjectDocumentModel, Paragraph, Sentence

    sample = spread([u for u in units if len(u) <= MAX_UNIT_CHARS], RANKED_UNITS)
    if not sample:
        return []
    tokenizer = SegtokTokenizer(_SUMY_LANGUAGES.get(language, "english"))
    sentences = [Sentence(unit, tokenizer) for unit in sample]
    summarizer = _summarizer(language)
    # A graph with no shared words has a zero norm in sumy's power method: no ranking then.
    with numpy.errstate(invalid="ignore", divide="ignore"):
        summarizer(ObjectDocumentModel([Paragraph(sentences)]), 1)
    ratings = [float(summarizer.ratings.get(s, 0.0)) for s in sentences]
    ratings = [0.0 if math.isnan(r) else r for r in ratings]
    order = sorted(range(len(sentences)), key=lambda i: (-ratings[i], i))
    return [(str(sentences[i]), ratings[i]) for i in order]


def keyphrases(units: list[str], language: str) -> list[str]:
    """YAKE's top key phrases (up to three words), best first."""
    import yake

    text = "\n".join(spread(units, len(units)))[:_KEYPHRASE_CHARS]
    if not text.strip():
        return []
    try:
        extractor = yake.KeywordExtractor(lan=language, n=3, top=KEYPHRASES, dedup_lim=0.7)
    except (OSError, ValueError):  # no stop-word list for this language
        extractor = yake.KeywordExtractor(lan="en", n=3, top=KEYPHRASES, dedup_lim=0.7)
    return [phrase for phrase, _score in extractor.extract_keywords(text)]


def summarize(units: list[str], language: str) -> tuple[str, list[str], list[str]]:
    """(summary, key points, key phrases) from the units' own words; all empty without units."""
    ranked = rank(units, language)
    phrases = keyphrases(units, language)
    # Prose first; a document with little of it (a statement, a form) adds its best short
    # closed sentences ("Closing balance EUR 97,418.65."), then whatever ranks highest.
    prose = [u for u, _ in ranked if is_prose(u)]
    closed = [u for u, _ in ranked if u[-1:] in ".!?" and len(words(u)) >= 3]
    chosen = list(dict.fromkeys([*prose, *closed, *(u for u, _ in ranked)]))
    chosen = chosen[:SUMMARY_SENTENCES]
    position = {u: i for i, u in enumerate(units)}
    summary = " ".join(sorted(chosen, key=lambda u: position.get(u, 0)))
    lowered = [p.lower() for p in phrases]

    def weight(item: tuple[str, float]) -> float:
        unit, rating = item
        hits = sum(1 for p in lowered if p in unit.lower())
        return rating * (1 + hits)

    points = [
        u for u, _ in sorted(ranked, key=weight, reverse=True)
        if u not in chosen and len(words(u)) >= 3
    ]  # fmt: skip
    return summary, points[:KEY_POINTS], phrases
