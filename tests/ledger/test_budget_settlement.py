"""The call layer with a real Redis budget, limiter, store and price table: a paid answer
is never lost to pricing or the ledger, unknown outcomes are booked at their worst case,
and the budget hold is taken after the permit and kept alive while the call runs.

The provider is scripted (the seam under test is the caller and what it settles)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from pipeline.errors import PipelineError, ProviderError, UnknownModel
from pipeline.ledger.budget import Budget, CallBudget, Reservation
from pipeline.llm.attempts import CallAttempt, MemoryRecorder, Outcome
from pipeline.llm.caller import LLMCaller
from pipeline.llm.callstore import CallStore, call_key
from pipeline.llm.limiter import Limiter
from pipeline.llm.pricing import PriceTable
from pipeline.llm.provider import LLMRequest, LLMResponse, Part, Usage
from pipeline.llm.retry import RetryPolicy
from pipeline.redis.keys import Keys
from pipeline.settings import load_settings
from tests.support.scripted import ScriptedProvider

MODEL = "gemini-3.5-flash-lite"  # priced in config/pricing.toml
ONCE = RetryPolicy(max_attempts=1)
LIMIT = Decimal("10")
ZERO = Decimal(0)


def _request(text: str = "summarise this") -> LLMRequest:
    return LLMRequest(model=MODEL, parts=(Part(text=text),), prompt_version="p1",
                      max_output_tokens=256)  # fmt: skip


def _answer(model_version: str) -> LLMResponse:
    return LLMResponse(text="fine", usage=Usage(input_tokens=100, output_tokens=40),
                       model_version=model_version, latency_s=0.01)  # fmt: skip


class Hanging(ScriptedProvider):
    """A call on the wire until `answer` is set (then it answers), or forever."""

    def __init__(self, recorder: MemoryRecorder) -> None:
        super().__init__(recorder)
        self.sending = asyncio.Event()
        self.answer = asyncio.Event()

    async def generate(self, request: LLMRequest) -> LLMResponse:
        self.sent.append(request)
        self.sending.set()
        await self.answer.wait()
        return _answer(MODEL + "-001")


class Setup:
    def __init__(self, aredis: aioredis.Redis, keys: Keys, provider: ScriptedProvider,
                 recorder: MemoryRecorder, *, hold_s: float = 900.0, prices: object = None,
                 **caller_kw: object) -> None:  # fmt: skip
        settings = load_settings(rpm=6000, tpm=10_000_000)
        self.limiter = Limiter(aredis, keys, settings)
        self.budget = Budget(aredis, keys, settings, hold_s=hold_s)
        self.store = CallStore(aredis, keys, ttl_s=60)
        self.prices = prices or PriceTable.load()
        self.caller = LLMCaller(provider, self.limiter, self.store, recorder, self.prices,  # type: ignore[arg-type]
                                policy=ONCE, **caller_kw)  # type: ignore[arg-type]  # fmt: skip

    async def call_budget(self) -> CallBudget:
        return await self.budget.for_call("b", LIMIT)

    async def batch(self) -> tuple[Decimal, Decimal]:
        status = (await self.budget.status("b", LIMIT))["batch"]
        return status.spent_usd, status.reserved_usd

    async def in_flight(self) -> int:
        return int((await self.limiter.state(MODEL))["in_flight"])


async def test_unknown_model_version_is_priced_as_the_model_asked_for(
    aredis: aioredis.Redis, keys: Keys
) -> None:
    recorder = MemoryRecorder()
    provider = ScriptedProvider(recorder, _answer("brand-new-model-2099"))
    s = Setup(aredis, keys, provider, recorder)
    response = await s.caller.call(_request(), budget=await s.call_budget())
    assert response.text == "fine"
    expected = PriceTable.load().cost(MODEL, response.usage, datetime.now(UTC))
    (attempt,) = recorder.calls.values()
    assert attempt.outcome is Outcome.OK and attempt.cost_usd == expected > 0
    assert await s.store.get(call_key(_request(), provider.name)) is not None
    assert await s.batch() == (expected, ZERO)  # settled at the real cost, hold freed
    assert await s.in_flight() == 0


class WorstCaseOnly:
    """Prices the worst case of the model asked for, but knows no answering version."""

    version = "test"

    def worst_case_cost(self, model: str, tokens: int, max_out: int, at: datetime) -> Decimal:
        return Decimal("0.5")

    def cost(self, model_version: str, usage: Usage, at: datetime) -> Decimal:
        raise UnknownModel(f"unknown model {model_version!r}")


async def test_an_answer_nobody_can_price_is_kept_at_zero_with_a_warning(
    aredis: aioredis.Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = MemoryRecorder()
    provider = ScriptedProvider(recorder, _answer("brand-new-model-2099"))
    s = Setup(aredis, keys, provider, recorder, prices=WorstCaseOnly())
    with caplog.at_level(logging.WARNING, logger="pipeline.llm.caller"):
        await s.caller.call(_request(), budget=await s.call_budget())
    assert "no price for 'brand-new-model-2099'" in caplog.text
    (attempt,) = recorder.calls.values()
    assert attempt.outcome is Outcome.OK and attempt.cost_usd == 0
    assert await s.store.get(call_key(_request(), provider.name)) is not None
    assert await s.batch() == (ZERO, ZERO)
    assert await s.in_flight() == 0


class LedgerDownOnce(MemoryRecorder):
    """The first settled() write fails, as a ledger write can."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    async def settled(self, call: CallAttempt) -> None:
        if not self.failed:
            self.failed = True
            raise PipelineError("ledger write failed")
        await super().settled(call)


async def test_a_failed_ledger_write_still_settles_and_never_pays_twice(
    aredis: aioredis.Redis, keys: Keys
) -> None:
    recorder = LedgerDownOnce()
    provider = ScriptedProvider(recorder, _answer(MODEL + "-001"))
    s = Setup(aredis, keys, provider, recorder)
    with pytest.raises(PipelineError, match="ledger write failed"):
        await s.caller.call(_request(), budget=await s.call_budget())
    spent, reserved = await s.batch()
    assert spent > 0 and reserved == 0  # the budget knows what was paid
    assert await s.in_flight() == 0  # the permit came back
    again = await s.caller.call(_request(), budget=await s.call_budget())  # the job's retry
    assert again.text == "fine" and len(provider.sent) == 1  # from the store, not re-paid
    assert await s.batch() == (spent, ZERO)


async def test_a_timed_out_call_is_booked_at_its_worst_case(
    aredis: aioredis.Redis, keys: Keys
) -> None:
    recorder = MemoryRecorder()
    provider = Hanging(recorder)
    s = Setup(aredis, keys, provider, recorder, attempt_timeout_s=0.2)
    with pytest.raises(ProviderError, match="DEADLINE_EXCEEDED"):
        await s.caller.call(_request(), budget=await s.call_budget())
    (attempt,) = recorder.calls.values()
    assert attempt.outcome is Outcome.ERROR
    assert attempt.cost_usd == attempt.estimated_cost_usd > 0  # maybe billed: not $0
    assert await s.batch() == (attempt.estimated_cost_usd, ZERO)
    assert await s.in_flight() == 0


async def test_a_cancelled_call_is_abandoned_at_its_worst_case(
    aredis: aioredis.Redis, keys: Keys
) -> None:
    recorder = MemoryRecorder()
    provider = Hanging(recorder)
    s = Setup(aredis, keys, provider, recorder)
    task = asyncio.create_task(s.caller.call(_request(), budget=await s.call_budget()))
    await asyncio.wait_for(provider.sending.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (attempt,) = recorder.calls.values()
    assert attempt.outcome is Outcome.ABANDONED
    assert attempt.cost_usd == attempt.estimated_cost_usd > 0
    assert await s.batch() == (attempt.estimated_cost_usd, ZERO)
    assert await s.in_flight() == 0


class PermitFirst(CallBudget):
    """Notes how many calls the limiter had in flight when the reservation was made."""

    def __init__(self, inner: CallBudget, limiter: Limiter) -> None:
        super().__init__(inner.budget, inner.batch_id, inner.batch_limit_usd)
        self.limiter = limiter
        self.in_flight_at_reserve: list[int] = []

    async def reserve(self, worst_case_usd: Decimal) -> Reservation:
        state = await self.limiter.state(MODEL)
        self.in_flight_at_reserve.append(int(state["in_flight"]))
        return await super().reserve(worst_case_usd)


async def test_the_hold_is_taken_after_the_permit(aredis: aioredis.Redis, keys: Keys) -> None:
    recorder = MemoryRecorder()
    provider = ScriptedProvider(recorder, _answer(MODEL + "-001"))
    s = Setup(aredis, keys, provider, recorder)
    spy = PermitFirst(await s.call_budget(), s.limiter)
    await s.caller.call(_request(), budget=spy)
    assert spy.in_flight_at_reserve == [1]  # this call's own permit was already granted


async def test_a_long_call_keeps_its_hold(aredis: aioredis.Redis, keys: Keys) -> None:
    recorder = MemoryRecorder()
    provider = Hanging(recorder)
    s = Setup(aredis, keys, provider, recorder, hold_s=0.6)
    task = asyncio.create_task(s.caller.call(_request(), budget=await s.call_budget()))
    await asyncio.wait_for(provider.sending.wait(), 5)
    (attempt,) = recorder.calls.values()
    loop = asyncio.get_running_loop()
    until = loop.time() + 4 * 0.6  # four hold lifetimes on the wire
    while loop.time() < until:
        assert await s.batch() == (ZERO, attempt.estimated_cost_usd), "the hold lapsed mid-call"
        await asyncio.sleep(0.1)
    provider.answer.set()
    response = await asyncio.wait_for(task, 10)
    cost = PriceTable.load().cost(MODEL, response.usage, datetime.now(UTC))
    assert await s.batch() == (cost, ZERO)
