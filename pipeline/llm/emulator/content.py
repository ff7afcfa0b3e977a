"""What the emulator reads from a request and writes back: token counts and the answer.

Counting follows Google's published rules closely enough that a cost estimate tested here
holds against the real API: text ~4 characters per token, a PDF page 258 tokens on 2.x
models and 560 on 3.x (MEDIUM media resolution), an image 258. The answer is the offline
analyzer's, so content really comes from the prompt and JSON really fits the schema.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.errors import BadDocument
from pipeline.llm.offline import CHARS_PER_TOKEN, analyze_text, fill_schema, pdf_text

if TYPE_CHECKING:
    from pipeline.llm.emulator.faults import Active

PDF_TOKENS_PER_PAGE_2X = 258
PDF_TOKENS_PER_PAGE_3X = 560
IMAGE_TOKENS = 258
DEFAULT_MAX_OUTPUT_TOKENS = 8192


class BadRequest(Exception):
    """Becomes a 400 INVALID_ARGUMENT with this message."""

    code = 400


class FileNotAccessible(BadRequest):
    """A `fileData` part naming a file that is not there (never uploaded, deleted, expired):
    Google answers 403 PERMISSION_DENIED "You do not have permission to access the File …
    or it may not exist." (google-gemini/deprecated-generative-ai-js#236)."""

    code = 403


def pick(mapping: dict[str, Any], camel: str, snake: str, default: Any = None) -> Any:
    """Google's JSON accepts both spellings, and the SDK sends some of each."""
    if camel in mapping:
        return mapping[camel]
    return mapping.get(snake, default)


def model_major(model: str) -> int:
    """2 for gemini-2.5-flash, 3 for gemini-3.8-flash; moving aliases count as current (3)."""
    match = re.match(r"(?:models/)?gemini-(\d+)", model)
    return int(match.group(1)) if match else 3


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


@dataclass
class Prompt:
    """The parts of a request that cost tokens, decoded once."""

    texts: list[str] = field(default_factory=list)
    system: str = ""
    pdf_pages: int = 0
    pdf_texts: list[str] = field(default_factory=list)
    images: int = 0
    other_bytes: int = 0
    inline_bytes: int = 0  # decoded bytes of inlineData parts
    file_bytes: int = 0  # bytes of the uploaded files fileData parts cite
    file_parts: int = 0

    def tokens(self, model: str, page_tokens: int | None = None) -> tuple[int, int]:
        """(text tokens, document tokens) for this model family; `page_tokens` overrides
        the per-page charge (the `inflate` fault)."""
        per_page = PDF_TOKENS_PER_PAGE_3X if model_major(model) >= 3 else PDF_TOKENS_PER_PAGE_2X
        if page_tokens is not None:
            per_page = page_tokens
        text = sum(text_tokens(t) for t in self.texts) + text_tokens(self.system)
        text += self.images * IMAGE_TOKENS + math.ceil(self.other_bytes / CHARS_PER_TOKEN)
        return text, self.pdf_pages * per_page

    def all_text(self) -> str:
        return "\n".join([*self.texts, *self.pdf_texts])

    def subject_text(self) -> str:
        """What an answer is about: the PDFs' text when the prompt carries PDFs (a model
        analyses the document, not the instructions that came with it), else the texts."""
        return "\n".join(self.pdf_texts) if self.pdf_pages else self.all_text()

    def match_text(self) -> str:
        """Everything a fault's `when` may match: system instruction, texts, PDF text."""
        return "\n".join([self.system, *self.texts, *self.pdf_texts])


def _parts(content: Any) -> list[dict[str, Any]]:
    if not isinstance(content, dict) or not isinstance(content.get("parts", []), list):
        raise BadRequest("each content must be an object with a list of parts")
    parts: list[dict[str, Any]] = content.get("parts", [])
    if not all(isinstance(p, dict) for p in parts):
        raise BadRequest("each part must be an object")
    return parts


# A `fileData.fileUri` -> (bytes, MIME type) of the uploaded file; raises BadRequest.
FileResolver = Callable[[str], tuple[bytes, str]]


def parse_prompt(body: dict[str, Any], files: FileResolver | None = None) -> Prompt:
    """The request's prompt; `files` reads parts sent as uploaded files (`fileData`).
    Raises BadRequest for a request the API refuses."""
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise BadRequest("* GenerateContentRequest.contents: contents is not specified")
    prompt = Prompt()
    system = pick(body, "systemInstruction", "system_instruction")
    if system is not None:
        prompt.system = "\n".join(str(p.get("text", "")) for p in _parts(system))
    for content in contents:
        for part in _parts(content):
            _add_part(prompt, part, files)
    return prompt


def _add_part(prompt: Prompt, part: dict[str, Any], files: FileResolver | None) -> None:
    if "text" in part:
        if part.get("thought"):
            return
        prompt.texts.append(str(part["text"]))
        return
    inline = pick(part, "inlineData", "inline_data")
    if inline is None:
        ref = pick(part, "fileData", "file_data")
        if ref is None:
            return
        if files is None:
            raise BadRequest("fileData is not served on this route; send the PDF inline")
        data, stored_mime = files(str(pick(ref, "fileUri", "file_uri", "")))
        prompt.file_parts += 1
        prompt.file_bytes += len(data)
        _add_data(prompt, str(pick(ref, "mimeType", "mime_type", "") or stored_mime), data)
        return
    data = _b64decode(str(inline.get("data", "")))
    prompt.inline_bytes += len(data)
    _add_data(prompt, str(pick(inline, "mimeType", "mime_type", "")), data)


def _add_data(prompt: Prompt, mime: str, data: bytes) -> None:
    if mime == "application/pdf":
        try:
            text, pages = pdf_text(data)
        except BadDocument as exc:
            raise BadRequest(f"The document could not be processed: {exc}") from None
        if pages == 0:
            raise BadRequest("The document has no pages.")
        prompt.pdf_pages += pages
        prompt.pdf_texts.append(text)
    elif mime.startswith("image/"):
        prompt.images += 1
    else:
        prompt.other_bytes += len(data)


def _b64decode(text: str) -> bytes:
    """Standard or URL-safe base64 (pydantic, and so the SDK, sends URL-safe), padding optional."""
    text = text.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("inlineData.data is not valid base64") from None


def fingerprint(model: str, body: dict[str, Any]) -> str:
    """Same model, contents and config -> same hash: how re-paid calls are spotted."""
    keyed = {
        "model": model.removeprefix("models/"),
        "contents": body.get("contents"),
        "system": pick(body, "systemInstruction", "system_instruction"),
        "config": pick(body, "generationConfig", "generation_config"),
    }
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str
    candidates_tokens: int
    thoughts_tokens: int


def thinking_tokens(model: str, config: dict[str, Any], default_tokens: int) -> int:
    """3.x models always think a little; 2.x only when thinkingConfig asks for a budget."""
    thinking = pick(config, "thinkingConfig", "thinking_config") or {}
    budget = pick(thinking, "thinkingBudget", "thinking_budget")
    level = pick(thinking, "thinkingLevel", "thinking_level")
    if budget == 0:
        return 0
    if budget is not None and int(budget) > 0:
        return min(default_tokens, int(budget))
    if budget == -1 or level is not None or model_major(model) >= 3:
        return default_tokens
    return 0


def answer(
    prompt: Prompt,
    model: str,
    config: dict[str, Any],
    default_thinking_tokens: int,
    bad_json_rate: float,
    rng: random.Random,
    verbose_tokens: int | None = None,
    think_tokens: int | None = None,
) -> Answer:
    """The reply text, cut to maxOutputTokens (thinking included) like the real API cuts it.

    `verbose_tokens` pads a JSON answer (whitespace inside the object, still valid JSON) to
    that many tokens; `think_tokens` forces that much thinking whatever thinkingBudget says
    (field case 08b), up to all of maxOutputTokens."""
    max_out = int(pick(config, "maxOutputTokens", "max_output_tokens", DEFAULT_MAX_OUTPUT_TOKENS))
    if max_out <= 0:
        raise BadRequest("generationConfig.maxOutputTokens must be positive")
    thoughts = min(thinking_tokens(model, config, default_thinking_tokens), max_out // 2)
    if think_tokens is not None:
        thoughts = min(think_tokens, max_out)
    analysis = analyze_text(prompt.subject_text(), prompt.pdf_pages)
    schema = pick(config, "responseJsonSchema", "response_json_schema") or pick(
        config, "responseSchema", "response_schema"
    )
    mime = pick(config, "responseMimeType", "response_mime_type", "text/plain")
    if mime == "application/json":
        data = fill_schema(schema, analysis) if isinstance(schema, dict) else analysis.as_dict()
        text = json.dumps(data, ensure_ascii=False)
        if verbose_tokens and text.endswith("}"):
            pad = verbose_tokens * CHARS_PER_TOKEN - len(text)
            text = text[:-1] + " " * max(0, pad) + "}"
        if bad_json_rate > 0 and rng.random() < bad_json_rate:
            text = text[: max(1, len(text) // 2)] + ' "'  # cut mid-value: never parses
    else:
        text = analysis.summary or "I could not find any text to analyse in the prompt."
    budget_chars = (max_out - thoughts) * CHARS_PER_TOKEN
    finish = "STOP"
    if len(text) > budget_chars:
        text, finish = text[:budget_chars], "MAX_TOKENS"
    return Answer(text, finish, text_tokens(text), thoughts)


def response_body(
    reply: Answer, active: Active, version: str, digest: str, prompt_tokens: int,
    split: tuple[int, int],
) -> dict[str, Any]:  # fmt: skip
    """The generateContent body: a blocked prompt, a stopped candidate, or the answer; the
    usageMetadata as the active faults shape it (the bill does not change)."""
    text_tokens, doc_tokens = split
    body: dict[str, Any] = {"modelVersion": version, "responseId": digest[:22]}
    out, thoughts = reply.candidates_tokens, reply.thoughts_tokens
    if active.block_reason is not None:
        body["promptFeedback"] = {"blockReason": active.block_reason}
        out = thoughts = 0
    elif active.finish_reason is not None:
        body["candidates"] = [{"finishReason": active.finish_reason, "index": 0}]
        out = thoughts = 0
    else:
        parts = [{"text": reply.text}] if reply.text else []
        body["candidates"] = [{"content": {"parts": parts, "role": "model"},
                               "finishReason": reply.finish_reason, "index": 0}]  # fmt: skip
    usage: dict[str, Any] = {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": out,
        "thoughtsTokenCount": thoughts,
        "cachedContentTokenCount": 0,
        "totalTokenCount": prompt_tokens + out + thoughts,
        "promptTokensDetails": [
            d
            for d in (
                {"modality": "TEXT", "tokenCount": text_tokens},
                {"modality": "DOCUMENT", "tokenCount": doc_tokens},
            )
            if d["tokenCount"]
        ],
    }
    if active.usage == "full":
        body["usageMetadata"] = usage
    elif active.usage == "total_only":
        body["usageMetadata"] = {"totalTokenCount": usage["totalTokenCount"]}
    return body
