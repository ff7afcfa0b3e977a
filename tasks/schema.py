"""The shape of one document's analysis, as Gemini must return it and as we store it.

`Analysis` serves Gemini (as a responseSchema) and the validator that decides whether an
answer needs the repair prompt; `MergedAnalysis` is what the merge call of a long document
asks for. `AnalysisResult` is the stored record: the analysis plus what produced it (provider,
model and version, prompt version), what it cost, which pages went into which part, which
pages had no text layer, and when. Schemas sent to Gemini are derived from the models rather
than written by hand, so the two cannot drift.
"""

from __future__ import annotations

import copy
import functools
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, Field, PlainSerializer

from pipeline.money import format_usd

# Money crosses JSON as pipeline/money.py writes it everywhere ("0.001250000", "0.000000000"),
# never a float, "1E-5" or a bare "0".
Money = Annotated[Decimal, PlainSerializer(format_usd, return_type=str)]
# What the answers a result is made of cost. Named apart from a results record's `cost_usd`
# (what the batch paid for the document, wasted calls included); read from `cost_usd` in
# records stored before the name changed.
USED = "used_answers_cost_usd"
_USED_OR_OLD = AliasChoices(USED, "cost_usd")
# An inclusive run of 1-based page numbers, [first, last].
PageRun = tuple[int, int]

# Keys Gemini's responseSchema (an OpenAPI 3.0 Schema subset) understands. Anything else
# (`$ref`, `$defs`, `additionalProperties`, `title`, `default`) is refused or ignored by
# the API, so it is left out rather than hoped about.
_GEMINI_KEYS = frozenset(
    {
        "type",
        "format",
        "description",
        "nullable",
        "enum",
        "items",
        "properties",
        "required",
        "minItems",
        "maxItems",
        "minimum",
        "maximum",
        "propertyOrdering",
    }
)


class Entities(BaseModel):
    people: list[str] = Field(
        default_factory=list, description="Names of people mentioned, as written."
    )
    organizations: list[str] = Field(
        default_factory=list, description="Companies, agencies and other organisations named."
    )
    dates: list[str] = Field(
        default_factory=list,
        description="Dates that matter to the document, ISO 8601 (YYYY-MM-DD) where possible.",
    )
    amounts: list[str] = Field(
        default_factory=list,
        description="Monetary amounts with their currency, e.g. 'EUR 12,500.00'.",
    )


class Analysis(BaseModel):
    summary: str = Field(description="Three to five sentences on what the document is and says.")
    key_points: list[str] = Field(
        description="The most important facts, obligations or findings, one per item."
    )
    document_type: str = Field(
        description=(
            "One lowercase word or phrase: contract, invoice, annual report, letter, "
            "form, manual, scanned image, other."
        )
    )
    entities: Entities
    language: str = Field(description="ISO 639-1 code of the document's main language, e.g. 'en'.")
    page_count: int = Field(ge=0, description="Number of pages analysed.")

    @classmethod
    def json_schema_for_gemini(cls) -> dict[str, Any]:
        """A self-contained schema in Gemini's responseSchema subset (no $ref, no $defs)."""
        return gemini_schema(cls)


class MergedAnalysis(BaseModel):
    """What the merge call writes for a long document; entities, language and page count
    are merged in code from the parts' own fields."""

    summary: str = Field(
        description="Three to five sentences on what the whole document is and says."
    )
    key_points: list[str] = Field(
        description="The most important facts, obligations or findings of the whole document."
    )
    document_type: str = Field(description=Analysis.model_fields["document_type"].description)


class Producer(BaseModel):
    """What produced a result."""

    provider: Literal["offline", "gemini", "emulator"]
    model: str = Field(description="The model asked for; 'offline' for the offline analyzer.")
    model_version: str = Field(description="The model version that answered (and billed).")
    prompt_version: str = Field(description="The analyze prompt's version: analyze-v1+3f2a9c1d.")


class PartSource(BaseModel):
    """Provenance of one part: which pages it covered and what answering it cost."""

    part: int = Field(ge=1, description="1-based, in page order.")
    last_part: int | None = Field(
        default=None, description="Set when consecutive parts are listed as one run."
    )
    first_page: int = Field(ge=1)
    last_page: int = Field(ge=1)
    model_version: str
    used_answers_cost_usd: Money | None = Field(
        validation_alias=_USED_OR_OLD,
        description="What the answer used for this part cost (its repair's, when repaired); "
        "None when no price is known for the model.",
    )


class AnalysisResult(Analysis):
    """One document's stored result; its JSON size is bounded by PIPELINE_MAX_RESULT_BYTES."""

    produced_by: Producer
    used_answers_cost_usd: Money | None = Field(
        validation_alias=_USED_OR_OLD,
        description="What the answers this result is made of cost (each part's used answer, "
        "a repair's when repaired, and the merge's); not the calls whose answers were thrown "
        "away, which the document's `cost_usd` and `wasted_usd` include. None when a call's "
        "model has no known price: the ledger has what was booked.",
    )
    parts: list[PartSource]
    pages_without_text: list[PageRun] = Field(
        default_factory=list, description="Pages with no text layer (scans), as [first, last] runs."
    )
    notes: list[str] = Field(default_factory=list, description="What the reader should know.")
    started_at: datetime
    finished_at: datetime


def gemini_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A pydantic model's schema in Gemini's responseSchema subset (no $ref, no $defs); a
    fresh copy each call, so a caller may change it."""
    return copy.deepcopy(_gemini_schema(model))


@functools.cache
def _gemini_schema(model: type[BaseModel]) -> dict[str, Any]:
    # ~13 ms of pydantic work per call, asked for every document of a submission (the
    # admission hint's prompt size): made once per model class.
    full = model.model_json_schema()
    return _gemini_subset(full, full.get("$defs", {}))


def _gemini_subset(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        # A $ref with siblings (pydantic puts a field's description there) keeps both.
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _gemini_subset(merged, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _GEMINI_KEYS:
            continue
        if key == "properties":
            out[key] = {name: _gemini_subset(sub, defs) for name, sub in value.items()}
            out["propertyOrdering"] = list(value)
        elif key == "items":
            out[key] = _gemini_subset(value, defs)
        else:
            out[key] = value
    if "properties" in out:
        # Every field is asked for, so a model never "saves tokens" by dropping one;
        # fields with defaults are still lenient on the way back in (pydantic).
        out["required"] = list(out["properties"])
    return out
