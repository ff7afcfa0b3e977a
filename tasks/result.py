"""A document's stored result: the analysis, what produced it, what it cost, and when.

Built from the parts' answers (one part for a document that fits one call) and validated
against `AnalysisResult`, then bounded in size by tasks/merge.py. A person reading it can
tell the offline analyzer's answer from Gemini's, and see which pages were never read.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from pipeline.llm.offline.pages import MODEL_VERSION as OFFLINE_MODEL_VERSION
from pipeline.llm.offline.pages import describe_pages, no_text_note, page_ranges
from pipeline.llm.provider import LLMRequest, LLMResponse, Usage
from pipeline.money import format_usd
from tasks.merge import bound
from tasks.schema import USED, AnalysisResult

log = logging.getLogger(__name__)


class Prices(Protocol):
    def cost(
        self, model_version: str, usage: Usage, at: datetime, batch: bool = False
    ) -> Decimal: ...


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def provider_of(model_version: str) -> str:
    """"offline" for the offline analyzer's answers, else "gemini": all a model version tells
    (the emulator answers with Gemini's versions; `part_outcome` records the provider by name)."""
    return "offline" if model_version == OFFLINE_MODEL_VERSION else "gemini"


def call_cost(
    prices: Prices, request: LLMRequest, response: LLMResponse, at: datetime
) -> Decimal | None:
    """What one answer cost, priced as the ledger prices it (pipeline/llm/caller.py): the
    answering version, else the model asked for, at the batch rate for an answer a batch job
    gave (raw "mode"); None when neither has a price."""
    if response.model_version == OFFLINE_MODEL_VERSION:
        return Decimal(0)
    batch = response.raw.get("mode") == "batch"
    for model in dict.fromkeys(m for m in (response.model_version, request.model) if m):
        try:
            return prices.cost(model, response.usage, at, batch=batch)
        except Exception:  # UnknownModel, or no price on that date
            continue
    log.warning("no price for %r: the result's cost is unknown", response.model_version)
    return None


def add_costs(*costs: Decimal | None) -> Decimal | None:
    """The sum, or None when any is unknown (an unknown cost is not $0)."""
    if any(c is None for c in costs):
        return None
    return sum((c for c in costs if c is not None), Decimal(0))


def part_outcome(
    analysis: dict[str, Any], *, part: int, first_page: int, last_page: int,
    model_version: str, cost: Decimal | None, blank_pages: list[int], started_at: str,
    provider: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One part's answer and provenance, as a chunk job returns it (plain JSON); `provider`
    is the answering provider's name (gemini, emulator), else told by `model_version`."""
    return {
        "analysis": analysis,
        "source": {
            "part": part,
            "first_page": first_page,
            "last_page": last_page,
            "model_version": model_version,
            "provider": provider or provider_of(model_version),
            USED: None if cost is None else format_usd(cost),
        },
        "pages_without_text": blank_pages,
        "started_at": started_at,
    }


def build_result(
    analysis: dict[str, Any], parts: list[dict[str, Any]], *, model: str,
    prompt_version: str, extra_cost: Decimal | None = Decimal(0), max_bytes: int,
) -> dict[str, Any]:  # fmt: skip
    """The stored record for a document from its merged analysis and its parts' outcomes
    (`part_outcome` dicts, in page order); `extra_cost` is the merge call's, if any."""
    sources = [p["source"] for p in parts]
    versions = [s["model_version"] for s in sources]
    provider = sources[0].get("provider") or provider_of(versions[0])
    blank = sorted({n for p in parts for n in p["pages_without_text"]})
    notes = []
    if blank and provider == "offline":
        notes.append(no_text_note(blank))
    elif blank:
        notes.append(f"No text layer on {describe_pages(blank)}; the model read them as images.")
    # `cost_usd`: a part answered before the field was renamed (a chunk job's stored return)
    costs = [None if s.get(USED, s.get("cost_usd")) is None
             else Decimal(s.get(USED, s.get("cost_usd"))) for s in sources]  # fmt: skip
    record = {
        **analysis,
        "produced_by": {
            "provider": provider,
            "model": OFFLINE_MODEL_VERSION if provider == "offline" else model,
            "model_version": versions[-1] if len(set(versions)) == 1 else ", ".join(
                dict.fromkeys(versions)
            ),
            "prompt_version": prompt_version,
        },
        USED: add_costs(*costs, extra_cost),
        "parts": sources,
        "pages_without_text": page_ranges(blank),
        "notes": notes,
        "started_at": min(p["started_at"] for p in parts),
        "finished_at": now_iso(),
    }
    checked = AnalysisResult.model_validate(record).model_dump(mode="json")
    return AnalysisResult.model_validate(bound(checked, max_bytes)).model_dump(mode="json")


def shown(record: Any) -> Any:
    """A stored result as every output shows it: money fixed-point at nine decimals
    (format_usd) under `used_answers_cost_usd`, also in records stored before either (a bare
    "0", `cost_usd`). Anything not a result record is returned as it is."""
    if not isinstance(record, dict) or "produced_by" not in record:
        return record
    out = _used_cost(record)
    if isinstance(out.get("parts"), list):
        out["parts"] = [_used_cost(p) if isinstance(p, dict) else p for p in out["parts"]]
    return out


def _used_cost(entry: dict[str, Any]) -> dict[str, Any]:
    """`entry` with its used answers' cost under USED, formatted, where the cost was."""
    out = {}
    for key, value in entry.items():
        if key in ("cost_usd", USED):
            out[USED] = None if value is None else format_usd(value)
        else:
            out[key] = value
    return out


def reusable(stored: Any, provider_name: str | None) -> bool:
    """Whether a stored result may stand for a new run: made by the same provider, in the
    current record shape. An offline result never answers for Gemini, nor the reverse."""
    if not isinstance(stored, dict) or provider_name is None:
        return False
    produced = stored.get("produced_by")
    if not isinstance(produced, dict) or produced.get("provider") != provider_name:
        return False
    try:
        AnalysisResult.model_validate(stored)
    except ValueError:
        return False
    return True
