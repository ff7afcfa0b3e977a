"""Long documents merged as data: the parts' structured answers combined field by field.

A long document is analysed in parts (tasks/analyze.py's chord); this module combines
their answers without pasting them anywhere as prose: entities are deduplicated and ranked
by how many parts name them, key points are taken round-robin by each part's own rank and
capped, language and type go by page-weighted vote, and the summary is a summary of the
parts' summaries (the offline analyzer ranks their sentences with LexRank; Gemini writes
one from the parts' fields, see `merge_prompt_fields`). `bound` then keeps a result under
PIPELINE_MAX_RESULT_BYTES whatever the page count.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from decimal import Decimal
from typing import Any

from pipeline.money import format_usd
from tasks.schema import USED

ENTITY_KINDS = ("people", "organizations", "dates", "amounts")
MAX_KEY_POINTS = 10
MAX_POINT_CHARS = 400
MAX_ENTITIES_PER_KIND = 50
MAX_ENTITY_CHARS = 200
MAX_SUMMARY_CHARS = 1500
SUMMARY_SENTENCES = 5
_NOT_A_VOTE = {"unknown", "other", ""}
_SPACE = re.compile(r"\s+")


def _key(text: str) -> str:
    """What makes two spellings the same entity: case, spacing and a trailing period."""
    return _SPACE.sub(" ", text).strip().rstrip(".").casefold()


def merge_entities(parts: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each kind's entities across parts, once each, most widely named first."""
    merged: dict[str, list[str]] = {}
    for kind in ENTITY_KINDS:
        seen: dict[str, tuple[str, int, int]] = {}  # key -> (as first written, parts, order)
        for part in parts:
            named = {_key(e): e for e in part.get("entities", {}).get(kind, []) if _key(e)}
            for key, text in named.items():
                first, count, order = seen.get(key, (text, 0, len(seen)))
                seen[key] = (first, count + 1, order)
        ranked = sorted(seen.values(), key=lambda v: (-v[1], v[2]))
        merged[kind] = [_clip(text, MAX_ENTITY_CHARS) for text, _, _ in ranked]
        merged[kind] = merged[kind][:MAX_ENTITIES_PER_KIND]
    return merged


def merge_key_points(parts: list[dict[str, Any]], cap: int = MAX_KEY_POINTS) -> list[str]:
    """Every part's best point first, then every part's second, …; duplicates once; capped."""
    lists = [list(part.get("key_points", [])) for part in parts]
    out: dict[str, str] = {}
    for rank in range(max((len(points) for points in lists), default=0)):
        for points in lists:
            if rank < len(points) and _key(points[rank]) not in out:
                out[_key(points[rank])] = _clip(points[rank], MAX_POINT_CHARS)
            if len(out) == cap:
                return list(out.values())
    return list(out.values())


def _vote(parts: list[dict[str, Any]], field: str, fallback: str) -> str:
    votes: Counter[str] = Counter()
    for part in parts:
        value = str(part.get(field, ""))
        if value not in _NOT_A_VOTE:
            votes[value] += max(1, int(part.get("page_count", 1)))
    if votes:
        return votes.most_common(1)[0][0]
    values = {str(part.get(field, "")) for part in parts}
    return "other" if "other" in values else fallback


def merge_language(parts: list[dict[str, Any]]) -> str:
    """The language of most pages; "unknown" when no part could tell."""
    return _vote(parts, "language", "unknown")


def merge_document_type(parts: list[dict[str, Any]]) -> str:
    """The type most pages were given; "other" or "unknown" when no part could tell."""
    return _vote(parts, "document_type", "unknown")


def summary_of_summaries(summaries: list[str], language: str) -> str:
    """The parts' summaries ranked with LexRank (the offline analyzer's own ranking), their
    best sentences in document order, at most MAX_SUMMARY_CHARS."""
    from pipeline.llm.offline import page_units
    from pipeline.llm.offline.summary import rank

    units = [u for s in summaries for u in page_units(s)]
    units = list(dict.fromkeys(units))
    position = {u: i for i, u in enumerate(units)}
    best = [u for u, _ in rank(units, language)[:SUMMARY_SENTENCES]]
    return _clip(" ".join(sorted(best, key=lambda u: position[u])), MAX_SUMMARY_CHARS)


def merge_prompt_fields(parts: list[dict[str, Any]], ranges: list[tuple[int, int]]) -> str:
    """The parts' summaries, types and key points as plain labelled text for the merge
    prompt; entities are merged in code and not sent."""
    blocks = []
    for index, (part, (first, last)) in enumerate(zip(parts, ranges, strict=True), start=1):
        points = "\n".join(f"- {p}" for p in part.get("key_points", []))
        blocks.append(
            f"Part {index} (pages {first}-{last}); document type: "
            f"{part.get('document_type', '')}; language: {part.get('language', '')}\n"
            f"Summary: {part.get('summary', '')}\nKey points:\n{points or '- (none)'}"
        )
    return "\n\n".join(blocks)


def _clip(text: str, limit: int) -> str:
    text = _SPACE.sub(" ", text).strip()
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0]
    return cut + "…"


def _size(record: dict[str, Any]) -> int:
    return len(json.dumps(record, ensure_ascii=False).encode())


def bound(record: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """`record` trimmed until its JSON is at most `max_bytes` bytes, with a note saying so.

    Trimmed in this order, each step only while still over: the longest entity or key-point
    list loses its last (lowest-ranked) item; the summary is halved; neighbouring parts with
    the same model version are listed as one run; the list of pages without text is halved.
    Returns a new dict; ValueError if even that cannot fit (a setting far too low).
    """
    out: dict[str, Any] = json.loads(json.dumps(record))
    out["summary"] = _clip(out.get("summary", ""), MAX_SUMMARY_CHARS)
    out["key_points"] = [_clip(p, MAX_POINT_CHARS) for p in out.get("key_points", [])]
    out["key_points"] = out["key_points"][:MAX_KEY_POINTS]
    if _size(out) <= max_bytes:
        return out
    out.setdefault("notes", []).append(
        f"Shortened to fit PIPELINE_MAX_RESULT_BYTES ({max_bytes}): the lowest-ranked "
        "entities and key points were left out."
    )
    while _size(out) > max_bytes:
        if not _trim_once(out):
            raise ValueError(
                f"a result cannot fit in {max_bytes} bytes; raise PIPELINE_MAX_RESULT_BYTES"
            )
    return out


def _trim_once(out: dict[str, Any]) -> bool:
    lists = [out["key_points"], *(out["entities"][k] for k in ENTITY_KINDS)]
    longest = max(lists, key=lambda items: sum(len(i) for i in items))
    if longest:
        longest.pop()
        return True
    if len(out["summary"]) > 200:
        out["summary"] = _clip(out["summary"], len(out["summary"]) // 2)
        return True
    if _coalesce_parts(out):
        return True
    runs = out.get("pages_without_text", [])
    if len(runs) > 1:
        del runs[(len(runs) + 1) // 2 :]
        return True
    return False


def _coalesce_parts(record: dict[str, Any]) -> bool:
    """Merge two neighbouring part entries that share a model version; False when none do."""
    parts = record.get("parts", [])
    for i in range(len(parts) - 1):
        a, b = parts[i], parts[i + 1]
        if a["model_version"] == b["model_version"]:
            a["last_part"] = b.get("last_part") or b["part"]
            a["last_page"] = b["last_page"]
            if a[USED] is not None and b[USED] is not None:
                a[USED] = format_usd(Decimal(a[USED]) + Decimal(b[USED]))
            else:
                a[USED] = None
            del parts[i + 1]
            return True
    return False
