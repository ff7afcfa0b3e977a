"""The call layer against a real Redis: store, retries, ledger order, budget, permits.

The provider is a small scripted class (the seam under test is the caller, the limiter
and the store, not HTTP); everything else is real. Where what is booked depends on how the
HTTP call failed (an unreadable answer, a request never sent), the real google-genai
client talks to the emulator instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from pipeline.errors import (
    AnswerMalformed,
    BudgetExceeded,
    DailyQuotaExhausted,
    DocumentMissing,
    ProviderError,
    RateLimited,
)
from pipeline.llm.attempts import CallAttempt, MemoryRecorder, Outcome
from pipeline.llm.caller import LLMCaller, rough_input_tokens
from pipeline.llm.callstore import CallStore, call_key
from pipeline.llm.failure import ProviderFailure
from pipeline.llm.gemini import GeminiProvider
from pipeline.llm.limiter import Limiter, Permit
from pipeline.llm.provider import LLMRequest, LLMResponse, Part, Usage
from pipeline.llm.retry import RetryBudget, RetryPolicy
from pipeline.redis.keys import Keys
from pipeline.settings import load_settings
from tests.support.emulator import RunningEmulator, start_emulator
from tests.support.paid_rig import set_faults
from tests.support.pdfs import make_pdf
from tests.support.scripted import ScriptedProvider

MODEL = "gemini-3.5-flash-lite"  # a model in config/pricing.toml: the limiter refuses others
FAST = RetryPolicy(max_attempts=4, initial_delay_s=0.01, max_delay_s=0.05, jitter_s=0.01)


def _request(text: str = "summarise this") -> LLMRequest:
    return LLMRequest(model=MODEL, parts=(Part(text=text),), prompt_version="p1")


def _ok(text: str = "fine", input_tokens: int = 120) -> LLMResponse:
    return LLMResponse(
        text=text,
        usage=Usage(input_tokens=input_tokens, output_tokens=30, thinking_tokens=5),
        model_version=MODEL + "-001",
        latency_s=0.01,
        data={"answer": text},
    )


def _fail(code: int, status: str, *, retry_delay_s: float | None = None, per_day: bool = False,
          retryable: bool | None = None) -> ProviderFailure:
    return ProviderFailure(
        code=code,
        status=status,
        message=f"scripted {status}",
        retry_delay_s=retry_delay_s,
        per_day=per_day,
        retryable=code in {429, 500, 503, 504} and not per_day if retryable is None else retryable,
    )


class Prices:
    """$1 per 1000 tokens of any kind: enough to see that usage becomes Decimal cost."""

    def cost(self, model_version: str, usage: Usage, at: datetime) -> Decimal:
        tokens = usage.input_tokens + usage.output_tokens + usage.thinking_tokens
        return Decimal(tokens) / Decimal(1000)


class Budget:
    def __init__(self, limit_usd: Decimal) -> None:
        self.limit_usd = limit_usd
        self.reserved: dict[int, Decimal] = {}
        self.settled: list[Decimal] = []
        self.cancelled = 0

    async def reserve(self, worst_case_usd: Decimal) -> int:
        if worst_case_usd > self.limit_usd:
            raise BudgetExceeded(f"{worst_case_usd} does not fit {self.limit_usd}")
        token = len(self.reserved)
        self.reserved[token] = worst_case_usd
        return token

    async def settle(self, token: int, actual_usd: Decimal) -> None:
        self.settled.append(actual_usd)

    async def cancel(self, token: int) -> None:
        self.cancelled += 1


def _caller(aredis: aioredis.Redis, keys: Keys, provider: ScriptedProvider,
            recorder: MemoryRecorder, **limits: int) -> tuple[LLMCaller, Limiter]:
    settings = load_settings(**({"rpm": 6000, "tpm": 10_000_000} | limits))
    limiter = Limiter(aredis, keys, settings)
    store = CallStore(aredis, keys, ttl_s=60)
    return LLMCaller(provider, limiter, store, recorder, Prices(), policy=FAST), limiter


def _attempts(recorder: MemoryRecorder) -> list[CallAttempt]:
    return sorted(recorder.calls.values(), key=lambda c: c.started_at)


async def test_success_is_recorded_started_first_then_stored_and_reused(
    aredis: aioredis.Redis, keys: Keys
):
    recorder = MemoryRecorder()
    provider = ScriptedProvider(recorder, _ok())
    caller, limiter = _caller(aredis, keys, provider, recorder)

    first = await caller.call(_request(), job_id="j1", document_id="d1")
    assert first.text == "fine"
    assert provider.seen_at_send == [[Outcome.STARTED]]  # the ledger row existed before sending
    (attempt,) = recorder.calls.values()
    assert attempt.outcome is Outcome.OK and attempt.job_id == "j1"
    assert attempt.model_version == MODEL + "-001"
    assert (attempt.input_tokens, attempt.output_tokens, attempt.thinking_tokens) == (120, 30, 5)
    assert attempt.cost_usd == Decimal("0.155")
    assert attempt.estimated_cost_usd == Decimal("2.148")  # 100 counted + 2048 max output
    assert await aredis.ttl(keys.call(call_key(_request(), provider.name))) > 0

    again = await caller.call(_request(), job_id="j2")
    assert len(provider.sent) == 1  # answered from the store, nothing sent
    assert again.text == first.text and again.data == {"answer": "fine"}
    assert again.usage == first.usage
    hit = [c for c in recorder.calls.values() if c.job_id == "j2"]
    assert len(hit) == 1 and hit[0].outcome is Outcome.FROM_STORE
    assert hit[0].cost_usd == Decimal("0")
    assert (await limiter.state(MODEL))["requests_today"] == 1


async def test_retry_waits_at_least_retry_delay_and_pauses_the_model(
    aredis: aioredis.Redis, keys: Keys
):
    recorder = MemoryRecorder()
    provider = ScriptedProvider(
        recorder, _fail(429, "RESOURCE_EXHAUSTED", retry_delay_s=0.3), _ok()
    )
    caller, limiter = _caller(aredis, keys, provider, recorder)
    await caller.call(_request())
    first, second = _attempts(recorder)
    assert first.outcome is Outcome.RATE_LIMITED and second.outcome is Outcome.OK
    assert first.finished_at is not None
    assert (second.started_at - first.finished_at).total_seconds() >= 0.3
    assert (second.attempt, first.extra["retry_delay_s"]) == (2, "0.3")
    state = await limiter.state(MODEL)
    assert state["factor"] == pytest.approx(0.52)  # halved by the 429, +0.02 by the success
    assert state["in_flight"] == 0


async def test_400_is_not_retried_and_carries_the_providers_message(
    aredis: aioredis.Redis, keys: Keys
):
    recorder = MemoryRecorder()
    provider = ScriptedProvider(recorder, _fail(400, "INVALID_ARGUMENT"), _ok())
    caller, limiter = _caller(aredis, keys, provider, recorder)
    with pytest.raises(ProviderError, match="scripted INVALID_ARGUMENT") as info:
        await caller.call(_request())
    assert info.value.code == 400
    assert len(provider.sent) == 1
    (attempt,) = recorder.calls.values()
    assert attempt.outcome is Outcome.ERROR and "400" in (attempt.error or "")
    assert await CallStore(aredis, keys).get(call_key(_request(), provider.name)) is None
    assert (await limiter.state(MODEL))["in_flight"] == 0


async def test_server_errors_retry_then_give_up(aredis: aioredis.Redis, keys: Keys):
    recorder = MemoryRecorder()
    provider = ScriptedProvider(recorder, *[_fail(503, "UNAVAILABLE")] * 4)
    caller, _ = _caller(aredis, keys, provider, recorder)
    with pytest.raises(ProviderError, match="still failing after 4 attempts"):
        await caller.call(_request())
    assert len(provider.sent) == 4
    assert [c.attempt for c in _attempts(recorder)] == [1, 2, 3, 4]


async def test_rate_limited_to_the_end_raises_rate_limited(aredis: aioredis.Redis, keys: Keys):
    recorder = MemoryRecorder()
    limited = _fail(429, "RESOURCE_EXHAUSTED", retry_delay_s=0.01)
    provider = ScriptedProvider(recorder, *[limited] * 4)
    caller, _ = _caller(aredis, keys, provider, recorder)
    with pytest.raises(RateLimited, match="still rate limited"):
        await caller.call(_request())
    assert all(c.outcome is Outcome.RATE_LIMITED for c in recorder.calls.values())


async def test_per_day_quota_stops_at_once(aredis: aioredis.Redis, keys: Keys):
    recorder = MemoryRecorder()
    provider = ScriptedProvider(recorder, _fail(429, "RESOURCE_EXHAUSTED", per_day=True), _ok())
    caller, limiter = _caller(aredis, keys, provider, recorder)
    with pytest.raises(DailyQuotaExhausted):
        await caller.call(_request())
    assert len(provider.sent) == 1
    assert (await limiter.state(MODEL))["daily_exhausted_until"] is not None
    with pytest.raises(DailyQuotaExhausted, match="daily quota exhausted until"):
        await caller.call(_request("another document"))
    assert len(provider.sent) == 1  # the second call never left the machine


async def test_retry_budget_is_shared_by_a_jobs_calls(aredis: aioredis.Redis, keys: Keys):
    recorder = MemoryRecorder()
    provider = ScriptedProvider(recorder, *[_fail(503, "UNAVAILABLE")] * 3)
    caller, _ = _caller(aredis, keys, provider, recorder)
    budget = RetryBudget(3)
    with pytest.raises(ProviderError, match="still failing after 3 attempts"):
        await caller.call(_request("one"), retry_budget=budget)
    with pytest.raises(ProviderError, match="retry budget"):
        await caller.call(_request("two"), retry_budget=budget)
    assert len(provider.sent) == 3


async def test_budget_exceeded_sends_nothing_and_refunds_the_permit(
    aredis: aioredis.Redis, keys: Keys
):
    recorder = MemoryRecorder()
    provider = ScriptedProvider(recorder, _ok())
    caller, limiter = _caller(aredis, keys, provider, recorder)
    permit = await limiter.acquire(MODEL, 100)
    with pytest.raises(BudgetExceeded):
        await caller.call(_request(), permit=permit, budget=Budget(Decimal("0.01")))
    assert provider.sent == [] and recorder.calls == {}
    state = await limiter.state(MODEL)
    assert state["in_flight"] == 0 and state["requests_today"] == 0


async def test_budget_reserved_and_settled_with_actual_cost(aredis: aioredis.Redis, keys: Keys):
    recorder = MemoryRecorder()
    provider = ScriptedProvider(recorder, _fail(503, "UNAVAILABLE"), _ok())
    caller, _ = _caller(aredis, keys, provider, recorder)
    budget = Budget(Decimal("10"))
    await caller.call(_request(), budget=budget, input_tokens=1000)
    # The bound is the counted input (100, not the limiter's 1000 estimate) + 2048 out.
    assert list(budget.reserved.values()) == [Decimal("2.148")] * 2
    assert budget.settled == [Decimal("0"), Decimal("0.155")]


async def test_gate_permit_serves_the_first_attempt(aredis: aioredis.Redis, keys: Keys):
    recorder = MemoryRecorder()
    provider = ScriptedProvider(recorder, _ok(input_tokens=700))
    caller, limiter = _caller(aredis, keys, provider, recorder, tpm=100_000)
    permit = await limiter.acquire(MODEL, 500)
    t0 = time.monotonic()
    before = (await limiter.state(MODEL))["tokens_left"]
    await caller.call(_request(), permit=permit)
    state = await limiter.state(MODEL)
    refilled = limiter.shape(MODEL).tok_rate_ms * (time.monotonic() - t0) * 1000
    assert state["requests_today"] == 1 and state["in_flight"] == 0
    # 700 used, 500 debited at the gate: 200 more, less what the bucket refilled meanwhile.
    assert 200 - 30 - refilled <= before - state["tokens_left"] <= 200 + 30


async def test_store_hit_gives_back_an_unused_gate_permit(aredis: aioredis.Redis, keys: Keys):
    recorder = MemoryRecorder()
    provider = ScriptedProvider(recorder)
    caller, limiter = _caller(aredis, keys, provider, recorder)
    await CallStore(aredis, keys).put(call_key(_request(), provider.name), _ok())
    permit: Any = await limiter.acquire(MODEL, 100)
    assert isinstance(permit, Permit)
    await caller.call(_request(), permit=permit)
    assert provider.sent == []
    assert (await limiter.state(MODEL))["requests_today"] == 0


def test_rough_estimate_counts_pdf_pages() -> None:
    pdf = b"%PDF-1.4 /Type /Pages /Type /Page x /Type/Page y"
    request = LLMRequest(model=MODEL, parts=(Part.pdf(pdf), Part(text="x" * 400)))
    assert rough_input_tokens(request) == 2 * 560 + 101


async def test_cancelled_call_is_recorded_abandoned_and_frees_its_slot(
    aredis: aioredis.Redis, keys: Keys
):
    recorder = MemoryRecorder()
    sending = asyncio.Event()

    class Hanging(ScriptedProvider):
        async def generate(self, request: LLMRequest) -> LLMResponse:
            sending.set()
            await asyncio.Event().wait()  # a call that never answers
            raise AssertionError("unreachable")

    caller, limiter = _caller(aredis, keys, Hanging(recorder), recorder)
    task = asyncio.create_task(caller.call(_request()))
    await asyncio.wait_for(sending.wait(), 5)
    assert (await limiter.state(MODEL))["in_flight"] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (attempt,) = recorder.calls.values()
    assert attempt.outcome is Outcome.ABANDONED
    assert (await limiter.state(MODEL))["in_flight"] == 0


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    with start_emulator() as running:
        yield running


def _gemini_caller(
    aredis: aioredis.Redis, keys: Keys, emu: RunningEmulator, recorder: MemoryRecorder
) -> tuple[LLMCaller, Limiter, GeminiProvider]:
    """The caller over the real google-genai client against the emulator."""
    provider = GeminiProvider(api_key=emu.api_key, base_url=emu.base_url)
    settings = load_settings(rpm=6000, tpm=10_000_000)
    limiter = Limiter(aredis, keys, settings)
    caller = LLMCaller(provider, limiter, CallStore(aredis, keys, ttl_s=60), recorder, Prices(),
                       policy=FAST)  # fmt: skip
    return caller, limiter, provider


async def test_an_answer_the_client_cannot_read_is_booked_at_its_worst_case(
    aredis: aioredis.Redis, keys: Keys, emu: RunningEmulator
) -> None:
    """The emulator answers and bills, but its 200 body is cut mid-JSON, so google-genai
    fails after the server answered: the call may have been billed, so the attempt is
    booked (and its budget hold settled) at its reserved worst case, never at $0. It is a
    malformed answer, not a refusal, and the call does not pay for another itself: the job
    decides (failure_policy.failed_call)."""
    set_faults(emu, {"kind": "garbled"})
    recorder = MemoryRecorder()
    caller, limiter, provider = _gemini_caller(aredis, keys, emu, recorder)
    budget = Budget(Decimal(100))
    try:
        with pytest.raises(AnswerMalformed, match=r"not valid JSON .*paid for"):
            await caller.call(_request("a garbled answer"), budget=budget)
    finally:
        await provider.aclose()
    stats = emu.stats()
    assert stats["generate_requests"] == 1 and stats["billed_total"]["requests"] == 1
    (attempt,) = _attempts(recorder)
    assert attempt.outcome is Outcome.ERROR
    assert attempt.estimated_cost_usd > 0
    assert attempt.cost_usd == attempt.estimated_cost_usd
    assert budget.settled == [attempt.estimated_cost_usd]
    assert (await limiter.state(MODEL))["in_flight"] == 0


async def test_a_pdf_file_gone_before_sending_is_document_missing_at_no_cost(
    tmp_path: Path, aredis: aioredis.Redis, keys: Keys, emu: RunningEmulator
) -> None:
    """A PDF part read by path whose file is gone when the attempt builds its request
    (counted earlier, while it was there): nothing is sent, so DocumentMissing (bad input),
    not a provider refusal, and the attempt is booked at $0 with its permit given back."""
    data = make_pdf(1, "hello")
    path = tmp_path / "doc.pdf"
    path.write_bytes(data)
    part = Part.pdf_file(str(path), hashlib.sha256(data).hexdigest(), len(data))
    request = LLMRequest(model=MODEL, parts=(part, Part(text="Summarise.")),
                         max_output_tokens=256)  # fmt: skip
    recorder = MemoryRecorder()
    caller, limiter, provider = _gemini_caller(aredis, keys, emu, recorder)
    budget = Budget(Decimal(100))
    try:
        await caller.counter.count(request)  # counted while the file was there
        path.unlink()
        with pytest.raises(DocumentMissing, match="could not be read"):
            await caller.call(request, budget=budget)
    finally:
        await provider.aclose()
    assert emu.stats()["generate_requests"] == 0
    (attempt,) = _attempts(recorder)
    assert attempt.outcome is Outcome.ERROR and attempt.cost_usd == 0
    assert budget.settled == [Decimal(0)]
    state = await limiter.state(MODEL)
    assert state["in_flight"] == 0
