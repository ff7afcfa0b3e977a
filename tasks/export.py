"""A batch's results as JSON, JSON Lines or CSV: `pipeline results --format` and
`GET /batches/{id}/results?format=` write the same bytes.

CSV is for a spreadsheet: one row per document, the analysis flattened (key points and each
kind of entity joined with " | "); documents without a result keep their row, with their
status and reason, so a reader sees which file failed and why.
"""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasks.batches import BatchView

FORMATS = ("json", "jsonl", "csv")
MEDIA_TYPES = {
    "json": "application/json",
    "jsonl": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
}
CSV_COLUMNS = (
    "name", "document_id", "status", "reason", "pages", "cost_usd", "wasted_usd",
    "paid_elsewhere_usd",
    "model", "provider", "calls", "document_type", "language", "summary", "key_points", "people",
    "organizations", "dates", "amounts",
    "answering_model",  # last: the columns before it keep their places for older readers
)  # fmt: skip
_JOIN = " | "


def results_of(view: BatchView) -> list[dict[str, Any]]:
    """One entry per document for `pipeline results` and `GET /batches/{id}/results`: name,
    pages, status, reason, `cost_usd` (what this batch paid for the document, every call
    included, so the entries sum to the batch's spend), `wasted_usd` (the part of it that
    bought nothing), `paid_elsewhere_usd` (what earlier batches paid for a result reused
    here: not in cost_usd), the stored analysis (None unless complete; its
    `used_answers_cost_usd` is what the answers it is made of cost), `provider` and
    `calls`. `provider` says who answered ("offline", "emulator", "gemini"), so an offline or
    rehearsal answer is never read as Gemini's: the result's `produced_by`, or for a document
    without a result the provider its run's newest call asked (the one that failed), from the
    ledger's rows, never guessed. `calls` is how many calls its current run made (ledger
    rows); `provider` is None only when there is neither a result nor a call.
    `model` is the model the document was submitted for (part of its key), and
    `answering_model` the one that answered, from the result's `produced_by` ("offline" for
    the offline analyzer; None without a result)."""
    from pipeline.ledger.recorder import result_provider
    from tasks.batches import usd

    members = {m.document_id: m for m in view.facts.members}
    out = []
    for d in view.documents:
        m = members[d.document_id]
        out.append({
            "document_id": d.document_id, "name": d.name, "pages": d.pages,
            "sha256": d.document_id, "status": d.status, "reason": d.reason,
            "model": m.model, "answering_model": answering_model(d.result),
            "prompt_version": m.prompt_version,
            "cost_usd": usd(d.cost), "wasted_usd": usd(d.wasted),
            "paid_elsewhere_usd": usd(d.paid_elsewhere),
            "provider": result_provider(d.result) or last_asked(d.asked),
            "calls": len(d.asked),
            "analysis": d.result,
        })  # fmt: skip
    return out


def answering_model(result: Any) -> str | None:
    """The model a stored result names in `produced_by` (None without one)."""
    produced = result.get("produced_by") if isinstance(result, dict) else None
    model = produced.get("model") if isinstance(produced, dict) else None
    return str(model) if model else None


def last_asked(asked: list[str]) -> str | None:
    """The provider of the newest call that names one (None when none does)."""
    return next((p for p in reversed(asked) if p), None)


def _row(entry: dict[str, Any]) -> list[Any]:
    a = entry.get("analysis") or {}
    entities = a.get("entities") or {}
    flat = {k: entry.get(k) for k in CSV_COLUMNS[:CSV_COLUMNS.index("document_type")]}
    flat.update(
        document_type=a.get("document_type"),
        language=a.get("language"),
        summary=a.get("summary"),
        key_points=_JOIN.join(a.get("key_points") or []),
    )
    for kind in ("people", "organizations", "dates", "amounts"):
        flat[kind] = _JOIN.join(entities.get(kind) or [])
    flat["answering_model"] = entry.get("answering_model")
    return ["" if flat[c] is None else flat[c] for c in CSV_COLUMNS]


def export(results: list[dict[str, Any]], fmt: str) -> str:
    """`results` (`results_of`) in `fmt`: json (one array), jsonl (one object a
    line) or csv (CSV_COLUMNS). Raises ValueError for another format."""
    if fmt == "json":
        return json.dumps(results, ensure_ascii=False, default=str) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in results)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for entry in results:
            writer.writerow(_row(entry))
        return out.getvalue()
    raise ValueError(f"format {fmt!r}: use one of {', '.join(FORMATS)}")
