"""A local Gemini API: same URLs, same JSON, same 429s, so tests use the real google-genai client.

A mock inside the SDK would let the request encoding, the error parsing and the retry timing
go untested; this server answers `generateContent` and `countTokens` over HTTP the way
generativelanguage.googleapis.com does (see /work/shared/GEMINI.md §3.3-3.5), enforces
quotas with Google's error bodies, injects faults on demand, and keeps statistics that let a
test check what the pipeline really did: how often it called, how fast, whether it paid
twice for the same content, and whether it waited out every retryDelay it was given.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from pipeline.llm.emulator import content
from pipeline.llm.emulator.batch_routes import add_batch_routes
from pipeline.llm.emulator.batches import GARBLED, BatchStore
from pipeline.llm.emulator.errors import error_response, parse_json, quota_error
from pipeline.llm.emulator.faults import Active, Fault, FaultBook
from pipeline.llm.emulator.files import FileStore, add_file_routes
from pipeline.llm.emulator.quota import QuotaTracker
from pipeline.llm.emulator.stats import Bill, EmulatorStats, Throttle, price
from pipeline.money import format_usd

DEFAULT_API_KEY = "emulator-key"



@dataclass
class EmulatorConfig:
    """How the emulator behaves. `None` for a quota means unlimited."""

    api_keys: tuple[str, ...] = (DEFAULT_API_KEY,)
    rpm: int | None = None
    tpm: int | None = None  # input tokens per minute
    rpd: int | None = None
    window_s: float = 60.0  # the RPM/TPM window; tests may shorten it
    day_window_s: float | None = None  # None: RPD resets at midnight Pacific, like Google
    retry_info: bool = True  # False: 429s without RetryInfo, as some real ones come
    latency_s: tuple[float, float] = (0.0, 0.0)
    fail_rate: float = 0.0  # share of admitted requests answered 500/503
    fail_codes: tuple[int, ...] = (500, 503)
    bad_json_rate: float = 0.0  # share of JSON answers cut mid-value
    thinking_tokens: int = 24  # thoughts billed per answer on 3.x or when asked
    model_aliases: dict[str, str] | None = None  # None: retired models -> successors (pricing)
    seed: int = 0
    faults: tuple[Fault, ...] = ()  # answers the real API gives on a bad day (faults.py)
    # Google's inline request limit: a larger body is refused 400 before anything is billed.
    max_request_bytes: int = 20 * 1024 * 1024
    # A request whose text (prompt or system instruction) contains `refuse_text` is refused
    # with `refuse_code`, every time: a deterministic failure of one kind of call (a merge).
    refuse_text: str | None = None
    refuse_code: int = 400
    # Batch Mode (batches.py): seconds from create to the end state, and which end state.
    batch_delay_s: float = 2.0
    batch_end_state: str = "SUCCEEDED"
    batch_pending_s: float | None = None  # seconds PENDING before RUNNING (None: delay / 3)

    def __post_init__(self) -> None:
        low, high = self.latency_s
        if not 0 <= low <= high:
            raise ValueError("latency_s must be (min, max) with 0 <= min <= max")
        for name in ("fail_rate", "bad_json_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if not self.api_keys:
            raise ValueError("api_keys must name at least one key")


def _api_key(request: Request) -> str | None:
    return request.headers.get("x-goog-api-key") or request.query_params.get("key")


class _Emulator:
    """The state behind one app: config, quotas, statistics, and a seeded RNG for faults."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.quotas = QuotaTracker(
            config.rpm, config.tpm, config.rpd, config.window_s, config.day_window_s
        )
        self.rng = random.Random(config.seed)
        self.stats = EmulatorStats()
        self.files = FileStore()
        self.batches = BatchStore(config.batch_delay_s, config.batch_end_state, self.files,
                                  config.batch_pending_s)
        self.faults = FaultBook(config.faults)
        self.lock = threading.Lock()  # stats are read from other threads by in-process tests
        from pipeline.llm.pricing import PriceTable

        self.prices = PriceTable.load()
        aliases = config.model_aliases
        if aliases is None:
            aliases = self.prices.retired_aliases(datetime.now(UTC))
        self.aliases = aliases

    def reset(self) -> None:
        with self.lock:
            self.stats = EmulatorStats()
            self.files = FileStore()
            self.batches = BatchStore(self.config.batch_delay_s, self.config.batch_end_state,
                                      self.files, self.config.batch_pending_s)
            self.faults.replace(self.faults.faults)  # the same faults, uses counted afresh
            self.quotas.reset()
            self.rng = random.Random(self.config.seed)

    def record_status(self, code: int) -> None:
        with self.lock:
            self.stats.requests_total += 1
            self.stats.by_status[code] += 1

    async def latency(self) -> None:
        low, high = self.config.latency_s
        if high > 0:
            await asyncio.sleep(self.rng.uniform(low, high))

    def check_key(self, request: Request) -> JSONResponse | None:
        key = _api_key(request)
        if not key:
            return error_response(
                403,
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API.",
            )
        if key not in self.config.api_keys:
            return error_response(
                401,
                "API key not valid. Please pass a valid API key.",
                [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                    }
                ],
            )
        return None

    async def generate(self, request: Request, model: str) -> Response:
        key = _api_key(request) or ""
        raw = await request.body()
        with self.lock:
            self.stats.largest_request_bytes = max(self.stats.largest_request_bytes, len(raw))
        if len(raw) > self.config.max_request_bytes:
            return error_response(400, "Request payload size exceeds the limit: "
                               f"{self.config.max_request_bytes} bytes.")  # fmt: skip
        body = parse_json(raw)
        if isinstance(body, JSONResponse):
            return body
        now = time.time()
        digest = content.fingerprint(model, body)
        with self.lock:
            self.stats.generate_requests += 1
            self.stats.timestamps[model].append(now)
            self.stats.arrivals[f"{key}/{model}"].append(now)
            if digest in self.stats.seen:
                self.stats.repeats += 1
            self.stats.seen.add(digest)
        if self.config.refuse_text and self.config.refuse_text in json.dumps(body):
            return error_response(
                self.config.refuse_code,
                f"Request refused by the emulator: it contains {self.config.refuse_text!r} "
                "(EmulatorConfig.refuse_text).",
            )
        try:
            prompt = await asyncio.to_thread(content.parse_prompt, body, self.files.resolve)
        except content.BadRequest as exc:
            return error_response(exc.code, str(exc))
        with self.lock:
            active = self.faults.match(prompt.match_text())
        version = self.aliases.get(model, model)
        text_tokens, doc_tokens = prompt.tokens(version, active.page_tokens)
        prompt_tokens = text_tokens + doc_tokens
        with self.lock:
            denial = self.quotas.admit(key, model, prompt_tokens, at=now)
            if denial is not None:
                self.stats.throttled[f"{key}/{model}"].append(
                    Throttle(now, denial.retry_delay_s, denial.quota_id)
                )
            fault = self.config.fail_rate > 0 and self.rng.random() < self.config.fail_rate
            fault_code = self.rng.choice(self.config.fail_codes)
        if active.unavailable:  # the `unavailable` fault: this request gets a 503
            fault, fault_code = True, 503
        if denial is not None:
            return quota_error(denial, model, self.config.retry_info)
        stats = self.stats  # the object counted in, even if a reset replaces it meanwhile
        data_bytes = prompt.inline_bytes + prompt.file_bytes
        with self.lock:
            stats.enter(len(raw), data_bytes)
        try:
            return await self._answer(body, prompt, active, version, digest, len(raw),
                                      (text_tokens, doc_tokens), fault, fault_code)
        finally:
            with self.lock:
                stats.leave(len(raw), data_bytes)

    async def _answer(
        self, body: dict[str, Any], prompt: content.Prompt, active: Active, version: str,
        digest: str, size: int, split: tuple[int, int], fault: bool, fault_code: int,
    ) -> Response:  # fmt: skip
        await self.latency()
        if fault:
            message = (
                "The model is overloaded. Please try again later."
                if fault_code == 503
                else "An internal error has occurred. Please retry or report in "
                "https://developers.generativeai.google/guide/troubleshooting"
            )
            return error_response(fault_code, message)
        try:
            payload = await asyncio.to_thread(
                self.complete, body, prompt, active, version, digest, size, split, False
            )
        except content.BadRequest as exc:
            return error_response(exc.code, str(exc))
        if active.garbled:  # billed above; the body is cut before the client can read it
            whole = json.dumps(payload).encode()
            return Response(whole[: len(whole) // 2], media_type="application/json")
        return JSONResponse(payload)

    def complete(
        self, body: dict[str, Any], prompt: content.Prompt, active: Active, version: str,
        digest: str, size: int, split: tuple[int, int], batch: bool,
    ) -> dict[str, Any]:  # fmt: skip
        """Answer an admitted request and bill it (at the batch rate when `batch`, into the
        batch bill). Raises content.BadRequest for a request the model would refuse."""
        text_tokens, doc_tokens = split
        prompt_tokens = text_tokens + doc_tokens
        config = content.pick(body, "generationConfig", "generation_config") or {}
        reply = content.answer(
            prompt, version, config, self.config.thinking_tokens, self.config.bad_json_rate,
            self.rng, active.verbose_tokens, active.think_tokens,
        )  # fmt: skip
        billed_prompt = prompt_tokens + active.overbill_tokens
        payload = content.response_body(reply, active, version, digest, billed_prompt, split)
        answered = active.block_reason is None and active.finish_reason is None
        out, thoughts = (reply.candidates_tokens, reply.thoughts_tokens) if answered else (0, 0)
        cost = price(version, billed_prompt, out, thoughts, self.prices, batch=batch)
        with self.lock:
            self.stats.bill(Bill(version, billed_prompt, out, thoughts, cost), batch=batch)
            if digest in self.stats.answered:
                self.stats.billed_repeats += 1
            self.stats.answered.add(digest)
            self.stats.log({
                "model": version, "bytes": size, "pdf_pages": prompt.pdf_pages,
                "inline_bytes": prompt.inline_bytes, "file_parts": prompt.file_parts,
                "file_bytes": prompt.file_bytes,
                "mode": "batch" if batch else "interactive",
                "max_output_tokens": content.pick(config, "maxOutputTokens",
                                                  "max_output_tokens"),
                "thinking_budget": content.pick(
                    content.pick(config, "thinkingConfig", "thinking_config") or {},
                    "thinkingBudget", "thinking_budget"),
                "finish_reason": reply.finish_reason if answered else active.finish_reason,
                "block_reason": active.block_reason, "faults": active.applied,
                "usage_reported": active.usage, "input_tokens": billed_prompt,
                "output_tokens": out, "thinking_tokens": thoughts, "cost_usd": format_usd(cost),
            })  # fmt: skip
        return payload

    def answer_batch_request(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        """One inline request of a batch job: {"response": …} billed at the batch rate, or
        {"error": Status} for a request the model refuses (not billed). No quotas, latency or
        random 5xx: a batch runs inside Google's own capacity."""
        digest = content.fingerprint(model, body)
        with self.lock:
            self.stats.batch_requests += 1
        try:
            prompt = content.parse_prompt(body, self.files.resolve)
            with self.lock:
                active = self.faults.match(prompt.match_text())
            version = self.aliases.get(model, model)
            split = prompt.tokens(version, active.page_tokens)
            payload = self.complete(body, prompt, active, version, digest,
                                    len(json.dumps(body)), split, True)  # fmt: skip
        except content.BadRequest as exc:
            return {"error": {"code": 400, "message": str(exc), "status": "INVALID_ARGUMENT"}}
        if active.garbled:  # billed above; batches.py cuts its responses-file line
            return {"response": payload, GARBLED: True}
        return {"response": payload}

    async def count_tokens(self, request: Request, model: str) -> JSONResponse:
        body = parse_json(await request.body())
        if isinstance(body, JSONResponse):
            return body
        inner = content.pick(body, "generateContentRequest", "generate_content_request")
        if isinstance(inner, dict):
            body = inner
        try:
            prompt = await asyncio.to_thread(content.parse_prompt, body, self.files.resolve)
        except content.BadRequest as exc:
            return error_response(exc.code, str(exc))
        with self.lock:
            self.stats.count_requests += 1
            self.stats.count_inline_bytes += prompt.inline_bytes
            self.stats.count_file_parts += prompt.file_parts
            active = self.faults.match(prompt.match_text(), counting=True)
        text_tokens, doc_tokens = prompt.tokens(self.aliases.get(model, model), active.page_tokens)
        return JSONResponse({"totalTokens": text_tokens + doc_tokens})


def create_emulator_app(config: EmulatorConfig | None = None) -> FastAPI:
    """The emulator as an ASGI app; serve it with `run_emulator` or any ASGI server."""
    emulator = _Emulator(config or EmulatorConfig())
    app = FastAPI(title="pipeline Gemini emulator", docs_url=None, redoc_url=None)
    app.state.emulator = emulator

    @app.post("/{version}/models/{target}")
    async def model_call(version: str, target: str, request: Request) -> Response:
        response: Response
        if version not in ("v1", "v1beta"):
            response = error_response(
                404, f"API version {version!r} is not served by the emulator."
            )
        elif (denied := emulator.check_key(request)) is not None:
            response = denied
        else:
            model, _, method = target.rpartition(":")
            if method == "generateContent" and model:
                response = await emulator.generate(request, model)
            elif method == "countTokens" and model:
                response = await emulator.count_tokens(request, model)
            elif method == "batchGenerateContent" and model:
                response = await app.state.batch_create(request, model)
            else:
                response = error_response(404, f"Method {target!r} is not served by the emulator.")
        emulator.record_status(response.status_code)
        return response

    add_batch_routes(app, emulator, error_response)
    add_file_routes(app, emulator, error_response)

    @app.get("/_emulator/stats")
    async def stats() -> dict[str, Any]:
        with emulator.lock:
            data = emulator.stats.as_json()
        data["batch"]["jobs_created"] = emulator.batches.created
        data["files"] = emulator.files.stats()
        data["batch"].update(emulator.batches.summary())
        return data

    @app.get("/_emulator/faults")
    async def get_faults() -> dict[str, Any]:
        with emulator.lock:
            return {"faults": [f.as_dict() for f in emulator.faults.faults]}

    @app.post("/_emulator/faults")
    async def set_faults(request: Request) -> JSONResponse:
        """Replace the injected faults: {"faults": [{"kind", "when", "tokens", "reason",
        "times"}]} (faults.py); an empty list turns them off."""
        body = parse_json(await request.body())
        if isinstance(body, JSONResponse):
            return body
        try:
            faults = [Fault.from_dict(f) for f in body.get("faults", [])]
        except (TypeError, ValueError) as exc:
            return error_response(400, f"bad fault: {exc}")
        with emulator.lock:
            emulator.faults.replace(faults)
        return JSONResponse({"faults": [f.as_dict() for f in faults]})

    @app.post("/_emulator/reset")
    async def reset() -> dict[str, bool]:
        emulator.reset()
        return {"reset": True}

    return app


def run_emulator(
    host: str = "127.0.0.1", port: int = 8089, config: EmulatorConfig | None = None
) -> None:
    """Serve the emulator until interrupted (the `pipeline emulator` command)."""
    import uvicorn

    uvicorn.run(create_emulator_app(config), host=host, port=port, log_level="warning")
