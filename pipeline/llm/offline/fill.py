"""Shaping an offline `Analysis` into whatever JSON schema a request asks for.

A model fills any response schema; the offline analyzer has a fixed set of findings, so it
maps them onto the schema by field name (summary, key_points, document_type, people,
dates …) and fills the rest with valid placeholders drawn from the document's own units.
"""

from __future__ import annotations

import math
from typing import Any

from pipeline.llm.offline.analysis import Analysis


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
        self.known["title"] = analysis.units[0][:80] if analysis.units else ""
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
            # Findings are already capped by the analyzer; only the schema cuts them further.
            values = [str(v) for v in known][: schema.get("maxItems")]
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
            sentences = self.a.units or [self.a.summary or "n/a"]
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


