"""A provider that needs no network and costs $0: real extractive analysis, announced as such.

It exists so the main job runs on a fresh machine without a key, and so the emulator can
answer with content that comes from the prompt rather than lorem ipsum. Everything here is
deterministic: the same document always gives the same answer.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.errors import BadDocument
from pipeline.llm.provider import LLMRequest, LLMResponse, Usage

CHARS_PER_TOKEN = 4

_STOPWORDS = {
    "en": "the and of to in is that for it with as was on be by this are or from at an which not",
    "de": "der die das und ist nicht ein eine zu den von mit sich des auf für im dem auch es wird",
    "fr": "le la les et des est une un du que pour dans pas qui sur au par ce il elle sont avec",
    "es": "el la los las y de que en es un una por con para del se no al lo como su más",
}
_STOP = {lang: set(words.split()) for lang, words in _STOPWORDS.items()}
_ALL_STOP = set().union(*_STOP.values())
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-ZÄÖÜÉÈÀ0-9\"'(])")
_WORD = re.compile(r"[A-Za-zÀ-ÖØ-öø-ÿ][A-Za-zÀ-ÖØ-öø-ÿ'-]+")
_DATE = re.compile(
    r"\b(?:\d{4}-\d{2}-\d{2}|\d{1,2}[./]\d{1,2}[./]\d{2,4}|"
    r"(?:\d{1,2}\s+)?(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.?\s+\d{1,2}?,?\s*\d{4})\b"
)
_MONEY = re.compile(
    r"(?:[$€£]\s?\d[\d,]*(?:\.\d+)?(?:\s?(?:million|billion|[mMbBkK]))?"
    r"|\b\d[\d,]*(?:\.\d+)?\s?(?:USD|EUR|GBP|dollars|euros))"
)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_ORG = re.compile(
    r"\b(?:[A-Z][\w&-]*\s+){0,4}[A-Z][\w&-]*,?\s+(?:Inc|Ltd|LLC|GmbH|AG|Corp|PLC|S\.A|SE)\b\.?"
)
_TITLED = re.compile(r"\b(?:Mr|Ms|Mrs|Dr|Prof)\.\s+[A-Z][a-z]+(?:\s+[A-Z][a-z]+)?")
_PAIR = re.compile(r"\b[A-Z][a-z]{2,}\s+[A-Z][a-z]{2,}\b")
_DOC_TYPES = {
    "invoice": ("invoice", "amount due", "bill to", "vat"),
    "contract": ("agreement", "party", "parties", "hereby", "terms"),
    "report": ("report", "results", "findings", "analysis"),
    "letter": ("dear", "sincerely", "regards"),
    "paper": ("abstract", "introduction", "references", "method"),
}


@dataclass
class Analysis:
    summary: str
    key_points: list[str]
    keywords: list[str]
    entities: dict[str, list[str]]
    language: str
    document_type: str
    page_count: int
    word_count: int
    sentences: list[str] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("sentences")
        return data


def pdf_text(data: bytes) -> tuple[str, int]:
    """(text, page count) of a PDF, or BadDocument with what is wrong with it."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise BadDocument("the PDF is encrypted; decrypt it before submitting")
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        raise BadDocument(f"the PDF cannot be read ({exc}); check that it is not corrupt") from None
    return "\n".join(pages), len(pages)


_ABBREV = re.compile(
    r"(?:\b(?:Mr|Ms|Mrs|Dr|Prof|No|Nr|Inc|Ltd|Corp|Co|St|vs|etc|e\.g|i\.e)|\b[A-Z])\.$"
)


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, not cut after "Dr." or "No." or an initial."""
    flat = re.sub(r"\s+", " ", text).strip()
    out: list[str] = []
    for piece in _SENTENCE.split(flat):
        if out and _ABBREV.search(out[-1]):
            out[-1] = f"{out[-1]} {piece}"
        else:
            out.append(piece)
    return [s.strip() for s in out if len(s.strip()) > 1]


def analyze_text(text: str, page_count: int = 0) -> Analysis:
    """Extractive analysis: frequent content words score sentences; regexes find entities."""
    sentences = list(dict.fromkeys(split_sentences(text)))  # repeated page headers count once
    words = [w.lower() for w in _WORD.findall(text)]
    content = [w for w in words if w not in _ALL_STOP and len(w) > 2]
    freq = Counter(content)
    top = freq.most_common(1)[0][1] if freq else 1

    def score(sentence: str) -> float:
        tokens = [w.lower() for w in _WORD.findall(sentence)]
        hits = [freq[t] / top for t in tokens if t in freq]
        return sum(hits) / math.sqrt(len(tokens)) if tokens else 0.0

    ranked = sorted(range(len(sentences)), key=lambda i: (-score(sentences[i]), i))
    summary_idx = sorted(ranked[:3])
    points_idx = sorted(ranked[:5])
    lang_scores = {lang: sum(1 for w in words if w in stop) for lang, stop in _STOP.items()}
    language = max(lang_scores, key=lambda k: (lang_scores[k], k == "en"))
    lowered = text.lower()
    doc_scores = {k: sum(lowered.count(c) for c in cues) for k, cues in _DOC_TYPES.items()}
    best_doc = max(doc_scores, key=lambda k: doc_scores[k])
    return Analysis(
        summary=" ".join(sentences[i] for i in summary_idx),
        key_points=[sentences[i] for i in points_idx],
        keywords=[w for w, _ in sorted(freq.items(), key=lambda kv: (-kv[1], kv[0]))[:10]],
        entities=_entities(text),
        language=language if any(lang_scores.values()) else "unknown",
        document_type=best_doc if doc_scores[best_doc] else "other",
        page_count=page_count,
        word_count=len(_WORD.findall(text)),
        sentences=sentences,
    )


def _unique(items: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(re.sub(r"\s+", " ", item).strip(" ,."), None)
    return [s for s in seen if s]


def _entities(text: str) -> dict[str, list[str]]:
    orgs = _unique(_ORG.findall(text))
    people = _unique(_TITLED.findall(text))
    org_words = {w for o in orgs for w in o.split()}
    titled = " ".join(people)
    for pair in _PAIR.findall(text):
        if pair in titled:
            continue
        first, last = pair.split()
        if first in org_words or last in org_words or first.lower() in _ALL_STOP:
            continue
        if first in {"The", "This", "That", "These", "Dear", "Total", "Amount"}:
            continue
        people.append(pair)
    return {
        "people": _unique(people)[:20],
        "organizations": orgs[:20],
        "dates": _unique(_DATE.findall(text))[:20],
        "amounts": _unique(_MONEY.findall(text))[:20],
        "emails": _unique(_EMAIL.findall(text))[:20],
    }


# -- filling a JSON schema -----------------------------------------------------------------


def fill_schema(schema: dict[str, Any], analysis: Analysis) -> Any:
    """A value that validates against `schema`, taking known field names from the analysis.

    Handles what response schemas use in practice: objects, arrays, strings, numbers,
    integers, booleans, enums, const, anyOf/oneOf, $ref into $defs, and Gemini's upper-case
    type names.
    """
    return _Filler(schema, analysis).value(schema, "")


class _Filler:
    def __init__(self, root: dict[str, Any], analysis: Analysis) -> None:
        self.root = root
        self.a = analysis
        self.known: dict[str, Any] = analysis.as_dict()
        self.known.update(analysis.entities)
        self.known["title"] = analysis.sentences[0][:80] if analysis.sentences else ""
        self.counter = 0

    def _deref(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            node: Any = self.root
            for part in str(schema["$ref"]).lstrip("#/").split("/"):
                node = node[part]
            schema = node
        return schema

    def value(self, schema: dict[str, Any], name: str, depth: int = 0) -> Any:
        schema = self._deref(schema)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return self._enum(schema["enum"], name)
        for key in ("anyOf", "oneOf", "allOf"):
            if key in schema:
                options = [self._deref(o) for o in schema[key]]
                non_null = [o for o in options if _type(o) != "null"] or options
                return self.value(non_null[0], name, depth)
        kind = _type(schema)
        if kind == "object" or (kind is None and "properties" in schema):
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, name, depth)
        known = self.known.get(name.lower())
        if kind in ("integer", "number"):
            number = known if isinstance(known, int) else len(name) + depth
            low = schema.get("minimum", schema.get("exclusiveMinimum", None))
            high = schema.get("maximum", schema.get("exclusiveMaximum", None))
            if low is not None and number < low:
                number = math.ceil(low) + (1 if "exclusiveMinimum" in schema else 0)
            if high is not None and number > high:
                number = math.floor(high) - (1 if "exclusiveMaximum" in schema else 0)
            return int(number) if kind == "integer" else float(number)
        if kind == "boolean":
            return bool(known) if known is not None else len(name) % 2 == 0
        if kind == "null":
            return None
        return self._string(schema, name, known)

    def _enum(self, options: list[Any], name: str) -> Any:
        known = self.known.get(name.lower())
        for option in options:
            if isinstance(known, str) and str(option).lower() == known.lower():
                return option
        if name.lower() == "document_type" and "other" in options:
            return "other"
        return options[0]

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        props: dict[str, Any] = schema.get("properties", {})
        out = {}
        for key, sub in props.items():
            if depth > 6 and key not in schema.get("required", []):
                continue
            out[key] = self.value(sub, key, depth + 1)
        return out

    def _array(self, schema: dict[str, Any], name: str, depth: int) -> list[Any]:
        items = self._deref(schema.get("items", {"type": "string"}))
        known = self.known.get(name.lower())
        low = int(schema.get("minItems", 0))
        high = int(schema.get("maxItems", 5))
        if isinstance(known, list) and _type(items) in ("string", None):
            values = [str(v) for v in known][:high]
        else:
            count = max(low, min(high, 2 if depth < 4 else 0))
            values = [self.value(items, name.rstrip("s"), depth + 1) for _ in range(count)]
        while len(values) < low:
            values.append(self.value(items, name.rstrip("s"), depth + 1))
        return values

    def _string(self, schema: dict[str, Any], name: str, known: Any) -> str:
        if isinstance(known, str) and known:
            text = known
        elif isinstance(known, list) and known:
            text = "; ".join(str(v) for v in known)
        else:
            sentences = self.a.sentences or [self.a.summary or "n/a"]
            text = sentences[self.counter % len(sentences)]
            self.counter += 1
        fmt = schema.get("format")
        if fmt == "date":
            text = "1970-01-01"
        elif fmt == "date-time":
            text = "1970-01-01T00:00:00Z"
        low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
        if high is not None:
            text = text[: int(high)]
        return text.ljust(low, ".")


def _type(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        non_null = [k for k in kind if str(k).lower() != "null"]
        kind = non_null[0] if non_null else "null"
    return str(kind).lower() if kind is not None else None


# -- the provider --------------------------------------------------------------------------


def request_text(request: LLMRequest) -> tuple[str, int, int]:
    """(all prompt text incl. PDF text, PDF page count, prompt characters) of a request."""
    texts, pages, chars = [], 0, len(request.system or "")
    for part in request.parts:
        if part.text is not None:
            texts.append(part.text)
            chars += len(part.text)
        elif part.data is not None and part.mime_type == "application/pdf":
            text, n = pdf_text(part.data)
            texts.append(text)
            pages += n
            chars += len(text)
    return "\n".join(texts), pages, chars


class OfflineProvider:
    """Implements the Provider protocol with local extractive analysis; never bills."""

    name = "offline"
    billed = False  # never bills: nothing reserved, every attempt booked at $0

    async def generate(self, request: LLMRequest) -> LLMResponse:
        started = time.perf_counter()
        # PDF parsing is CPU work: keep it off the event loop.
        text, pages, chars = await asyncio.to_thread(request_text, request)
        analysis = await asyncio.to_thread(analyze_text, text, pages)
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
            model_version="offline",
            latency_s=time.perf_counter() - started,
            data=data,
            raw={"analysis": analysis.as_dict()},
        )

    async def count_tokens(self, request: LLMRequest) -> int:
        _, _, chars = await asyncio.to_thread(request_text, request)
        return math.ceil(chars / CHARS_PER_TOKEN)

    async def aclose(self) -> None:
        return None
