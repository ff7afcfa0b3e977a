"""The analysis schema as Gemini receives it: self-contained and inside its subset."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.genai import types
from pydantic import ValidationError

from tasks.schema import Analysis, Entities

_FORBIDDEN = {"$ref", "$defs", "additionalProperties", "title", "default", "anyOf", "allOf"}


def _keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = set(node)
        for key, value in node.items():
            if key == "properties":
                for sub in value.values():
                    found |= _keys(sub)
            else:
                found |= _keys(value)
        return found
    if isinstance(node, list):
        return set().union(*(_keys(v) for v in node)) if node else set()
    return set()


def test_schema_is_plain_and_complete() -> None:
    schema = Analysis.json_schema_for_gemini()
    assert not _keys(schema) & _FORBIDDEN
    assert schema["type"] == "object"
    assert schema["required"] == [
        "summary", "key_points", "document_type", "entities", "language", "page_count",
    ]
    entities = schema["properties"]["entities"]
    assert entities["type"] == "object"
    assert entities["required"] == ["people", "organizations", "dates", "amounts"]
    assert entities["properties"]["amounts"] == {
        "type": "array",
        "items": {"type": "string"},
        "description": Entities.model_fields["amounts"].description,
    }
    assert schema["properties"]["page_count"]["type"] == "integer"
    json.dumps(schema)  # plain JSON, nothing exotic


def test_google_genai_accepts_the_schema() -> None:
    parsed = types.Schema.model_validate(Analysis.json_schema_for_gemini())
    assert parsed.type == types.Type.OBJECT
    assert parsed.properties is not None
    assert parsed.properties["entities"].properties is not None
    assert set(parsed.properties["entities"].properties) == {
        "people", "organizations", "dates", "amounts",
    }
    config = types.GenerateContentConfig(
        response_mime_type="application/json",
        response_schema=Analysis.json_schema_for_gemini(),
    )
    assert config.response_schema is not None


def test_answers_validate_against_the_model() -> None:
    answer = {
        "summary": "An invoice.",
        "key_points": ["Total EUR 25,662.35"],
        "document_type": "invoice",
        "entities": {"people": ["Lena Vogt"], "organizations": [], "dates": ["2026-03-31"],
                     "amounts": ["EUR 25,662.35"]},
        "language": "en",
        "page_count": 1,
    }
    assert Analysis.model_validate(answer).entities.people == ["Lena Vogt"]
    with pytest.raises(ValidationError):
        Analysis.model_validate({**answer, "page_count": "many"})
    with pytest.raises(ValidationError):
        Analysis.model_validate({k: v for k, v in answer.items() if k != "summary"})
