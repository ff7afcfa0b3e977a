"""The provider contract: one request in, one response with its usage out.

Everything above this line (limiter, retries, call store, ledger) is written against these
types, so Gemini, the offline analyzer and tests all look the same to the rest of the code.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.errors import DocumentMissing


def file_gone(path: str, exc: OSError) -> DocumentMissing:
    """The error for a PDF file a request reads that cannot be read (removed from the
    document store while its job ran): bad input, and nothing was sent."""
    return DocumentMissing(
        f"the document file {path} could not be read ({exc.strerror or exc}); it was removed "
        "from the document store while its job ran: submit the PDF again"
    )


@dataclass(frozen=True)
class Part:
    """A prompt part: text, or bytes with a MIME type (PDFs go inline as application/pdf).

    The bytes are either in `data` or in a local file at `path` (a document in the document
    store, pipeline/storage/), given with their `sha256` hex digest and `size`: a job then
    holds a path, not the PDF, and the bytes are read only by the attempt that sends them
    (inline), or streamed from the file by the Files API upload (pipeline/llm/uploads.py).
    `pages`, when known, is the PDF's page count (for the limiter's rough estimate).

    `file_uri` is set on a data part that was uploaded through the Files API for one call:
    it is then sent as `fileData` instead of inline base64. The call key, the count cache
    key and the size checks use `digest()` and `byte_size`, so they are the same whichever
    way the part holds or sends its bytes."""

    text: str | None = None
    data: bytes | None = None
    mime_type: str | None = None
    file_uri: str | None = None
    path: str | None = None
    sha256: str | None = None
    size: int | None = None
    pages: int | None = None

    def __post_init__(self) -> None:
        if self.path is not None and (self.sha256 is None or self.size is None):
            raise ValueError("a Part read from a file needs its sha256 and size")

    @classmethod
    def pdf(cls, data: bytes) -> Part:
        return cls(data=data, mime_type="application/pdf")

    @classmethod
    def pdf_file(cls, path: str, sha256: str, size: int, pages: int | None = None) -> Part:
        """A PDF read from `path` when sent; `sha256` and `size` are those of its bytes."""
        return cls(mime_type="application/pdf", path=path, sha256=sha256, size=size,
                   pages=pages)  # fmt: skip

    @property
    def has_bytes(self) -> bool:
        """Whether this is a data part (in memory or in a file), not text."""
        return self.data is not None or self.path is not None

    @property
    def byte_size(self) -> int:
        """Bytes of the data (0 for a text part)."""
        if self.data is not None:
            return len(self.data)
        return self.size or 0

    def digest(self) -> bytes:
        """sha256 of the data (raw 32 bytes): hashed now for `data`, given for a file."""
        if self.data is not None:
            return hashlib.sha256(self.data).digest()
        if self.sha256 is not None:
            return bytes.fromhex(self.sha256)
        raise ValueError("a text Part has no data digest")

    def read(self) -> bytes:
        """The data: `data`, or the file's bytes read now (blocking file I/O). Raises
        DocumentMissing when the file cannot be read."""
        if self.data is not None:
            return self.data
        if self.path is not None:
            try:
                with open(self.path, "rb") as fh:
                    return fh.read()
            except OSError as exc:
                raise file_gone(self.path, exc) from None
        raise ValueError("a text Part has no data")


@dataclass(frozen=True)
class LLMRequest:
    """One generateContent request. `max_output_tokens` caps the answer (Gemini counts
    thoughts against it); `thinking_budget` caps the thinking. Both are sent on every request
    (tasks set them), so `output_bound_tokens` bounds what one answer can be billed."""

    model: str
    parts: tuple[Part, ...]
    system: str | None = None
    response_schema: dict[str, Any] | None = None  # JSON schema; asks for application/json
    max_output_tokens: int = 2048
    temperature: float | None = None
    thinking_budget: int | None = None
    prompt_version: str = "none"

    @property
    def output_bound_tokens(self) -> int:
        """The most output tokens (answer + thoughts) this request can be billed.

        Gemini counts thoughts against maxOutputTokens (case 08b: thoughtsTokenCount equal
        to maxOutputTokens, no answer), but the bound does not rely on it: it adds the
        thinking budget, so it holds under either reading."""
        return self.max_output_tokens + max(0, self.thinking_budget or 0)

    def payload_bytes(self) -> int:
        """Bytes of the JSON body google-genai sends to generateContent for this request:
        inline data as base64, text JSON-escaped, system instruction, generation config
        and schema, serialised the way the SDK does (json.dumps with its default
        separators; tests/llm/test_payload_size.py checks it against what the emulator
        receives). This is what Google's inline request limit (20 MB, GEMINI.md §3.5) is
        checked against."""
        # The base64 text is counted, not made: it needs no JSON escaping, so each inline part
        # adds exactly its encoded length to a body written with "" in its place (making it
        # would hold ~4x the PDF's bytes in base64, JSON and UTF-8 copies at once).
        inline = sum(4 * ((p.byte_size + 2) // 3) for p in self.parts
                     if p.has_bytes and p.file_uri is None)  # fmt: skip
        return len(json.dumps(self.rest_body(inline_placeholder=True)).encode()) + inline

    def rest_body(self, file_uris: Mapping[str, str] | None = None, *,
                  inline_placeholder: bool = False) -> dict[str, Any]:  # fmt: skip
        """The generateContent JSON body (REST spelling, as the SDK sends it): also one
        line's `request` of a batch input file. `file_uris` maps the sha256 of a data
        part to the Files API URI it was uploaded as: that part goes as `fileData`. With
        `inline_placeholder`, inline data is written as "" (payload_bytes counts it)."""
        uploaded = file_uris or {}
        parts: list[dict[str, Any]] = []
        for part in self.parts:
            if part.has_bytes:
                uri = part.file_uri
                if uri is None and uploaded:
                    uri = uploaded.get(part.digest().hex())
                if uri is not None:
                    parts.append({"fileData": {"fileUri": uri,
                                               "mimeType": part.mime_type or ""}})  # fmt: skip
                    continue
                data = "" if inline_placeholder else base64.b64encode(part.read()).decode("ascii")
                parts.append({"inlineData": {"data": data, "mime_type": part.mime_type or ""}})
            else:
                parts.append({"text": part.text or ""})
        body: dict[str, Any] = {"contents": [{"parts": parts, "role": "user"}]}
        if self.system:
            body["systemInstruction"] = {"parts": [{"text": self.system}], "role": "user"}
        config: dict[str, Any] = {"maxOutputTokens": self.max_output_tokens}
        if self.temperature is not None:
            config["temperature"] = self.temperature
        if self.response_schema is not None:
            config["responseMimeType"] = "application/json"
            config["responseJsonSchema"] = self.response_schema
        if self.thinking_budget is not None:
            config["thinkingConfig"] = {"thinking_budget": self.thinking_budget}
        body["generationConfig"] = config
        return body

    def prompt_hash(self) -> str:
        """sha256 of what countTokens counts (model, system, parts): the count cache's key."""
        h = hashlib.sha256(json.dumps([self.model, self.system]).encode())
        for part in self.parts:
            if part.text is not None:
                h.update(b"T" + hashlib.sha256(part.text.encode()).digest())
            if part.has_bytes:
                mime = (part.mime_type or "").encode()
                h.update(b"D" + mime + part.digest())
        return h.hexdigest()

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
            if part.has_bytes:
                h.update(b"D" + (part.mime_type or "").encode() + part.digest())
        return h.hexdigest()


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0  # promptTokenCount (includes cached)
    output_tokens: int = 0  # candidatesTokenCount
    thinking_tokens: int = 0  # thoughtsTokenCount, billed as output
    cached_tokens: int = 0  # cachedContentTokenCount


@dataclass(frozen=True)
class ReportedUsage:
    """usageMetadata exactly as the provider sent it: None for a field it left out.

    Google's JSON omits zero-valued fields, and answers have come back with no usageMetadata
    at all or with only totalTokenCount (field case 10), so "absent" is not "zero"; the
    caller decides what to book (pipeline/llm/usage.py)."""

    present: bool  # False: no usageMetadata in the response at all
    prompt: int | None = None  # promptTokenCount (cached included)
    candidates: int | None = None  # candidatesTokenCount
    thoughts: int | None = None  # thoughtsTokenCount
    cached: int | None = None  # cachedContentTokenCount
    tool_use: int | None = None  # toolUsePromptTokenCount, billed as input
    total: int | None = None  # totalTokenCount


@dataclass(frozen=True)
class LLMResponse:
    """What came back for one request. `finish_reason` is the first candidate's
    (STOP, MAX_TOKENS, SAFETY, RECITATION ...; None when there is no candidate) and
    `block_reason` is promptFeedback.blockReason; pipeline/llm/stop.py reads both before
    anything parses `text`. `reported` is the provider's own usage, fields it omitted as
    None; None for a provider whose `usage` is always complete (offline, tests)."""

    text: str
    usage: Usage
    model_version: str  # the model that answered, and so the one that bills
    latency_s: float
    data: Any = None  # parsed JSON when a response_schema was given
    raw: dict[str, Any] = field(default_factory=dict)
    finish_reason: str | None = "STOP"
    block_reason: str | None = None
    reported: ReportedUsage | None = None


class Provider(Protocol):
    """`billed` says whether answers cost money: a provider that never bills (the offline
    analyzer) has nothing reserved against budgets and every attempt booked at $0.
    `metered` says whether its calls count against a remote provider's rate limits: one that
    answers locally (the offline analyzer again) takes no permit of the shared limiter."""

    name: str
    billed: bool
    metered: bool

    async def generate(self, request: LLMRequest) -> LLMResponse:
        """One HTTP attempt, no retries: retrying is the caller's (llm/retry.py) job. Raises
        ProviderCallError for a failed attempt (`failure.maybe_billed` when it may have been
        billed all the same), DocumentMissing for a PDF file part that cannot be read: then
        nothing was sent, and the caller books the attempt at $0."""
        ...

    async def count_tokens(self, request: LLMRequest) -> int:
        ...

    async def aclose(self) -> None:
        ...
