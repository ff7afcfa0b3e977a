"""The provider contract: one request in, one response with its usage out.

Everything above this line (limiter, retries, call store, ledger) is written against these
types, so Gemini, the offline analyzer and tests all look the same to the rest of the code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Part:
    """A prompt part: text, or bytes with a MIME type (PDFs go inline as application/pdf)."""

    text: str | None = None
    data: bytes | None = None
    mime_type: str | None = None

    @classmethod
    def pdf(cls, data: bytes) -> Part:
        return cls(data=data, mime_type="application/pdf")


@dataclass(frozen=True)
class LLMRequest:
    model: str
    parts: tuple[Part, ...]
    system: str | None = None
    response_schema: dict[str, Any] | None = None  # JSON schema; asks for application/json
    max_output_tokens: int = 2048
    temperature: float | None = None
    thinking_budget: int | None = None
    prompt_version: str = "none"

    def content_hash(self) -> str:
        """sha256 over everything that changes the answer; the base of the call key."""
        h = hashlib.sha256()
        settings = {
            "model": self.model,
            "system": self.system,
            "schema": self.response_schema,
            "max_output_tokens": self.max_output_tokens,
            "temperature": self.temperature,
            "thinking_budget": self.thinking_budget,
            "prompt_version": self.prompt_version,
        }
        h.update(json.dumps(settings, sort_keys=True).encode())
        for part in self.parts:
            if part.text is not None:
                h.update(b"T" + part.text.encode())
            if part.data is not None:
                digest = hashlib.sha256(part.data).digest()
                h.update(b"D" + (part.mime_type or "").encode() + digest)
        return h.hexdigest()


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0  # promptTokenCount (includes cached)
    output_tokens: int = 0  # candidatesTokenCount
    thinking_tokens: int = 0  # thoughtsTokenCount, billed as output
    cached_tokens: int = 0  # cachedContentTokenCount


@dataclass(frozen=True)
class LLMResponse:
    text: str
    usage: Usage
    model_version: str  # the model that answered, and so the one that bills
    latency_s: float
    data: Any = None  # parsed JSON when a response_schema was given
    raw: dict[str, Any] = field(default_factory=dict)


class Provider(Protocol):
    name: str

    async def generate(self, request: LLMRequest) -> LLMResponse:
        """One HTTP attempt, no retries: retrying is the caller's (llm/retry.py) job."""
        ...

    async def count_tokens(self, request: LLMRequest) -> int:
        ...

    async def aclose(self) -> None:
        ...
