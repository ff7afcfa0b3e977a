"""The shape of one document's analysis, as Gemini must return it and as we store it.

One pydantic model serves three readers: Gemini (as a responseSchema), the validator that
decides whether an answer needs the repair prompt, and the results table. The schema sent
to Gemini is derived from the model rather than written by hand, so the two cannot drift.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

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
        full = cls.model_json_schema()
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
