"""Gemini through google-genai: one HTTP attempt per `generate`, errors made plain.

The SDK's own retries stay off (no `retry_options`): it retries 429s after ~1 s no matter
what RetryInfo says, which is how a 429 storm starts. Our retry layer owns retries and reads
the `ProviderFailure` that `parse_api_error` builds from the SDK's error. The API version is
pinned because google-genai 3.x changed its default to v1, where some fields differ.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import time
from typing import TYPE_CHECKING, Any

from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from pipeline.errors import SettingsError
from pipeline.llm.failure import (
    RETRYABLE_CODES,
    ProviderCallError,
    ProviderFailure,
    malformed,
    maybe_billed_words,
)
from pipeline.llm.provider import LLMRequest, LLMResponse, Part, ReportedUsage, Usage
from pipeline.llm.wire import request_hook

if TYPE_CHECKING:
    from pipeline.llm.batch import GeminiBatches
    from pipeline.llm.uploads import CallFiles

# Data parts from this size go through the Files API (PIPELINE_FILES_API_MIN_BYTES; why this
# figure: pipeline/llm/uploads.py, which imports this module, so it is not imported here).
DEFAULT_FILES_MIN_BYTES = 4 * 1024 * 1024

__all__ = ["GeminiProvider", "ProviderCallError", "ProviderFailure", "parse_api_error"]

DEFAULT_TIMEOUT_S = 300.0
# What the SDK raises for a 200 body that is not JSON (UnknownApiResponseError: a ValueError
# from the SDK's own decoder, not in every 1.x release).
_UNREADABLE: tuple[type[BaseException], ...] = tuple(
    t for t in (json.JSONDecodeError, getattr(genai_errors, "UnknownApiResponseError", None))
    if t is not None
)  # fmt: skip
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def api_key_from_env() -> str | None:
    """The key the SDK itself would use: GOOGLE_API_KEY wins over GEMINI_API_KEY."""
    return os.environ.get("GOOGLE_API_KEY") or os.environ.get("GEMINI_API_KEY") or None


def parse_duration_s(value: Any) -> float | None:
    """A protobuf Duration ("59s", "0.5s") in seconds, or None if it is not one."""
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value)) if value is not None else None
    return float(match.group(1)) if match else None


def _error_body(details: Any) -> dict[str, Any]:
    if isinstance(details, list) and details:
        details = details[0]
    if isinstance(details, dict):
        inner = details.get("error", details)
        return inner if isinstance(inner, dict) else {}
    return {}


def _transport_error(exc: BaseException, who: str) -> ProviderFailure | None:
    """Timeouts and connection failures of httpx or httpx2 (the SDK may use either). A
    connection never made (refused, proxy, scheme) sent nothing; one that failed once made
    (reset while the answer was awaited, a broken stream) may have delivered the request:
    what that may have cost is `who`'s (failure.maybe_billed_words)."""
    cost = maybe_billed_words(who)
    for module_name in ("httpx", "httpx2"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if isinstance(exc, module.TimeoutException):
            return ProviderFailure.timeout(f"no answer from Gemini in time ({exc!r})")
        if isinstance(exc, module.TransportError):
            unsent = isinstance(exc, module.ConnectError | module.ProxyError
                                | module.UnsupportedProtocol)  # fmt: skip
            message = (f"could not reach Gemini ({exc!r}); check the network or base URL"
                       if unsent else f"the connection to Gemini broke before its answer "
                       f"({exc!r}); {cost}")  # fmt: skip
            return ProviderFailure(code=0, status="UNAVAILABLE", message=message,
                                   retryable=True, maybe_billed=not unsent)  # fmt: skip
    return None


def parse_api_error(exc: BaseException, who: str = "gemini") -> ProviderFailure:
    """What went wrong, in fields the retry layer and the limiter can act on.

    Reads google.rpc.RetryInfo.retryDelay (the SDK ignores it) and whether any
    QuotaFailure violation names a per-day quota, which no retry within the day can fix.
    An error status from the server (APIError) was answered, not billed; any other
    exception from inside the SDK's call (an answer it could not parse, a bug) may come
    after the server answered, so it is `maybe_billed`: callers build what they can before
    the SDK's call (GeminiProvider.generate), so that nothing of ours fails inside it.
    `who` is the provider's name ("gemini", "emulator"): what a request that may have been
    delivered cost is said by it (the emulator bills nothing).
    """
    if isinstance(exc, ProviderCallError):
        return exc.failure
    if isinstance(exc, genai_errors.APIError):
        body = _error_body(exc.details)
        code = int(exc.code or body.get("code") or 0)
        status = str(exc.status or body.get("status") or "UNKNOWN")
        message = str(exc.message or body.get("message") or exc)
        retry_delay_s: float | None = None
        per_day = False
        for detail in body.get("details") or []:
            if not isinstance(detail, dict):
                continue
            kind = str(detail.get("@type", ""))
            if kind.endswith("google.rpc.RetryInfo"):
                retry_delay_s = parse_duration_s(detail.get("retryDelay"))
            elif kind.endswith("google.rpc.QuotaFailure"):
                for violation in detail.get("violations") or []:
                    quota_id = (
                        str(violation.get("quotaId", "")) if isinstance(violation, dict) else ""
                    )
                    per_day = per_day or "PerDay" in quota_id
        return ProviderFailure(
            code=code,
            status=status,
            message=message,
            retry_delay_s=retry_delay_s,
            per_day=per_day,
            retryable=code in RETRYABLE_CODES and not per_day,
        )
    if isinstance(exc, TimeoutError):
        return ProviderFailure.timeout()
    transport = _transport_error(exc, who)
    if transport is not None:
        return transport
    return ProviderFailure(code=0, status="UNKNOWN", message=repr(exc), retryable=False,
                           maybe_billed=True)  # fmt: skip


def _sdk_part(part: Part) -> types.Part:
    if part.text is not None:
        return types.Part.from_text(text=part.text)
    if part.file_uri is not None:  # uploaded for this call (llm/uploads.py): no inline bytes
        return types.Part.from_uri(file_uri=part.file_uri,
                                   mime_type=part.mime_type or "application/pdf")  # fmt: skip
    if part.has_bytes:  # a file part is read now, by the attempt that sends it
        mime_type = part.mime_type or "application/pdf"  # (DocumentMissing when it is gone)
        return types.Part.from_bytes(data=part.read(), mime_type=mime_type)
    raise ValueError("a Part needs text or data")


class GeminiProvider:
    """The Provider protocol over google-genai's async client."""

    name = "gemini"
    billed = True
    metered = True  # the emulator too: a rehearsal takes the shared limiter's quota

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        api_version: str = "v1beta",
        headers: dict[str, str] | None = None,
        files_min_bytes: int = DEFAULT_FILES_MIN_BYTES,
        name: str = "gemini",
    ) -> None:
        # "emulator" when pipeline.llm.factory points it at the emulator: results record who
        # answered, and an emulator's never stands for Gemini's (tasks/result.py `reusable`).
        self.name = name
        key = api_key or api_key_from_env()
        if not key:
            raise SettingsError(
                "no Gemini API key: set GEMINI_API_KEY (or GOOGLE_API_KEY), "
                "or use PIPELINE_PROVIDER=offline to run without one"
            )
        self.base_url = base_url or os.environ.get("GOOGLE_GEMINI_BASE_URL") or None
        options = types.HttpOptions(
            base_url=self.base_url,
            api_version=api_version,
            timeout=int(timeout_s * 1000),
            headers=headers,
            # Reports when a generateContent request has left (llm/wire.py): the limiter's
            # window counts it from then. The SDK builds its clients with these arguments.
            async_client_args={"event_hooks": {"request": [request_hook]}},
        )
        self._client = genai.Client(api_key=key, http_options=options)
        self.files_min_bytes = files_min_bytes

    def call_files(self, request: LLMRequest) -> CallFiles | None:
        """The Files API uploads of one call (llm/uploads.py): data parts of at least
        `files_min_bytes` go as `fileData`; None when every part goes inline."""
        from pipeline.llm.uploads import CallFiles, goes_as_file

        if not any(goes_as_file(p, self.files_min_bytes) for p in request.parts):
            return None
        return CallFiles(self._client, request, self.files_min_bytes)

    def _config(self, request: LLMRequest) -> types.GenerateContentConfig:
        config: dict[str, Any] = {"max_output_tokens": request.max_output_tokens}
        if request.system:
            config["system_instruction"] = request.system
        if request.temperature is not None:
            config["temperature"] = request.temperature
        if request.thinking_budget is not None:
            config["thinking_config"] = types.ThinkingConfig(
                thinking_budget=request.thinking_budget
            )
        if request.response_schema is not None:
            config["response_mime_type"] = "application/json"
            config["response_json_schema"] = request.response_schema
        return types.GenerateContentConfig(**config)

    def _contents(self, request: LLMRequest) -> list[types.Content]:
        """The request's parts as the SDK's contents, file parts read now (DocumentMissing
        when a file is gone)."""
        return [types.Content(role="user", parts=[_sdk_part(p) for p in request.parts])]

    async def generate(self, request: LLMRequest) -> LLMResponse:
        """One attempt. Raises DocumentMissing when a PDF file part cannot be read (nothing
        sent), ProviderCallError (with `.failure`) on any failure of the call itself (an
        answer that is not JSON: `.failure.malformed`)."""
        # Built before the call, so a failure here is not mistaken for one of the call's,
        # which may come after the request went out (parse_api_error's `maybe_billed`).
        contents, config = self._contents(request), self._config(request)
        started = time.perf_counter()
        try:
            response = await self._client.aio.models.generate_content(
                model=request.model, contents=contents, config=config
            )
        except _UNREADABLE as exc:
            # The SDK decodes a body only once its status said 200 (an error status raises
            # APIError first): the model answered, and was billed, but the body is not JSON.
            raise ProviderCallError(malformed(self.name, exc)) from exc
        except Exception as exc:
            failure = parse_api_error(exc, self.name)
            raise ProviderCallError(failure) from exc
        return to_llm_response(response, request, time.perf_counter() - started)

    @property
    def batches(self) -> GeminiBatches:
        """Batch Mode through the same client: create/get/find/cancel/delete (llm/batch.py)."""
        from pipeline.llm.batch import GeminiBatches

        return GeminiBatches(self._client, self._config, self._contents, self.name)

    async def count_tokens(self, request: LLMRequest) -> int:
        """countTokens for the whole prompt (free; GEMINI.md §3.3). The Gemini API refuses
        system_instruction in countTokens (the SDK raises ValueError), so the system prompt
        is counted as one more text part of the contents: text is counted the same either
        way. Raises DocumentMissing when a PDF file part cannot be read, ProviderCallError
        when the count fails."""
        contents = self._contents(request)
        if request.system:
            contents.insert(0, types.Content(role="user",
                                             parts=[types.Part.from_text(text=request.system)]))
        try:
            result = await self._client.aio.models.count_tokens(
                model=request.model, contents=contents
            )
        except Exception as exc:
            raise ProviderCallError(parse_api_error(exc)) from exc
        return int(result.total_tokens or 0)

    async def aclose(self) -> None:
        await self._client.aio.aclose()


def to_llm_response(
    response: types.GenerateContentResponse, request: LLMRequest, latency_s: float
) -> LLMResponse:
    """The provider-neutral answer of a GenerateContentResponse (interactive or one response
    of a batch job): usage as billed, as reported, and the stop and block reasons that the
    answer classification (llm/stop.py) reads."""
    meta = response.usage_metadata
    usage = Usage(
        input_tokens=(meta.prompt_token_count or 0) if meta else 0,
        output_tokens=(meta.candidates_token_count or 0) if meta else 0,
        thinking_tokens=(meta.thoughts_token_count or 0) if meta else 0,
        cached_tokens=(meta.cached_content_token_count or 0) if meta else 0,
    )
    text, finish_reason = _answer_text(response)
    feedback = response.prompt_feedback
    block = feedback.block_reason if feedback is not None else None
    data: Any = None
    if request.response_schema is not None and finish_reason == "STOP" and not block:
        try:
            data = json.loads(text)
        except ValueError:
            data = None  # billed anyway: the caller decides whether to repair or retry
    return LLMResponse(
        text=text,
        usage=usage,
        model_version=response.model_version or request.model,
        latency_s=latency_s,
        data=data,
        raw={
            "finish_reason": finish_reason,
            "response_id": response.response_id,
            "usage_metadata": meta.model_dump(mode="json", exclude_none=True) if meta else {},
        },
        finish_reason=finish_reason,
        block_reason=_enum_text(block),
        reported=_reported(meta),
    )


def _answer_text(response: types.GenerateContentResponse) -> tuple[str, str | None]:
    """Text of the first candidate without thought parts, and why it stopped (None when
    there is no candidate; FINISH_REASON_UNSPECIFIED when it gave none)."""
    if not response.candidates:
        return "", None
    candidate = response.candidates[0]
    parts = candidate.content.parts if candidate.content and candidate.content.parts else []
    text = "".join(p.text for p in parts if p.text and not p.thought)
    reason = _enum_text(candidate.finish_reason) or "FINISH_REASON_UNSPECIFIED"
    return text, reason


def _enum_text(value: Any) -> str | None:
    """An SDK enum (or the plain string the SDK keeps for a value it does not know) as text."""
    if value is None:
        return None
    return str(getattr(value, "value", value)) or None


def _reported(meta: types.GenerateContentResponseUsageMetadata | None) -> ReportedUsage:
    """usageMetadata as sent: a field left out stays None (it is not a zero to book)."""
    if meta is None:
        return ReportedUsage(present=False)
    return ReportedUsage(
        present=True,
        prompt=meta.prompt_token_count,
        candidates=meta.candidates_token_count,
        thoughts=meta.thoughts_token_count,
        cached=meta.cached_content_token_count,
        tool_use=meta.tool_use_prompt_token_count,
        total=meta.total_token_count,
    )
