"""What the document is: its language (py3langid) and its kind (cue words on its first page).

Language: py3langid, a maintained fork of langid.py (Lui & Baldwin 2012): a naive Bayes
model over byte n-grams for 97 languages, shipped in the package as a 4.5 MB numpy file,
deterministic, and fast enough to run on every part of a long document. A larger detector
(lingua, a ~96 MB wheel) is more accurate on a few words, but a page gives it plenty.

Kind: no installable library tells an invoice from a contract without a trained model to
download, so the document's own title words decide: each kind has cue words (English,
German, French, Spanish), weighted by where they stand — the first lines count most — and
a document with too little evidence is `other`. A document without text is `unknown`.
"""

from __future__ import annotations

import functools
import re
from typing import Any

UNKNOWN = "unknown"
OTHER = "other"
# py3langid's softmax probability under which the language is reported as unknown.
MIN_LANGUAGE_CONFIDENCE = 0.5
_LANGUAGE_SAMPLE_CHARS = 20_000
_HEAD_CHARS = 400  # the title region of the first page
_MIN_SCORE = 3

# kind -> cue phrases (lower case). A cue in the title region scores 3, elsewhere on the
# first page 1 (a letter's 2: its salutation and closing never stand in a title); the
# highest total wins.
_CUES: dict[str, tuple[str, ...]] = {
    "invoice": ("invoice", "rechnung", "facture", "factura", "amount due", "total due",
                "bill to", "rechnungsnummer", "montant dû", "due date"),
    "contract": ("agreement", "contract", "vertrag", "contrat", "contrato", "the parties",
                 "hereinafter", "governing law", "termination"),
    "annual report": ("annual report", "geschäftsbericht", "rapport annuel",
                      "informe anual", "report and accounts"),
    "statement": ("statement of account", "account statement", "kontoauszug",
                  "relevé de compte", "opening balance", "closing balance"),
    "paper": ("abstract", "introduction", "references", "keywords:", "related work"),
    "letter": ("dear ", "sehr geehrte", "madame, monsieur", "madame", "estimado",
               "yours sincerely", "kind regards", "mit freundlichen grüßen",
               "veuillez agréer", "cordialement"),
    "manual": ("manual", "handbuch", "user guide", "mode d'emploi", "instructions",
               "maintenance"),
    "form": ("application form", "formular", "formulaire", "please complete", "signature:"),
    "report": ("report", "bericht", "rapport", "findings", "summary of results"),
}  # fmt: skip
_BODY_WEIGHT = {"letter": 2}
_CUE_PATTERNS = {
    kind: [re.compile(r"(?<!\w)" + re.escape(cue)) for cue in cues] for kind, cues in _CUES.items()
}


@functools.cache
def _identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(
        MODEL_FILE, norm_probs=True, min_confidence=MIN_LANGUAGE_CONFIDENCE
    )


def detect_language(text: str) -> str:
    """ISO 639-1 code of the text's main language, or "unknown" when it cannot tell."""
    sample = text[:_LANGUAGE_SAMPLE_CHARS]
    if sum(c.isalpha() for c in sample) < 20:
        return UNKNOWN
    language, _confidence = _identifier().classify(sample)
    return UNKNOWN if language == "und" else str(language)


def document_type(first_page: str) -> str:
    """The kind of document its first page announces, or "other" when the cues are weak."""
    lowered = " ".join(first_page.split()).lower()
    if not lowered:
        return UNKNOWN
    head = lowered[:_HEAD_CHARS]
    scores: dict[str, int] = {}
    for kind, patterns in _CUE_PATTERNS.items():
        score = 0
        for pattern in patterns:
            if pattern.search(head):
                score += 3
            elif pattern.search(lowered):
                score += _BODY_WEIGHT.get(kind, 1)
        scores[kind] = score
    best = max(scores, key=lambda kind: scores[kind])  # ties: the order of _CUES
    return best if scores[best] >= _MIN_SCORE else OTHER
