"""`Services.call` turns budget and LLM errors into what the queue should do with the job:
wait a few seconds for other calls' holds, end over_budget only when spend cannot fit,
and fail at once (Permanent) on errors the same request would meet again.

Real Redis, SQLite ledger, limiter, budget and price table; the provider is scripted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

from pipeline.errors import OverBudget, Permanent, Reason, Retry
from pipeline.failure_policy import HELD_BUDGET_JITTER_S, HELD_BUDGET_RETRY_S
from pipeline.llm.attempts import MemoryRecorder
from pipeline.llm.failure import ProviderFailure
from pipeline.llm.provider import LLMRequest, LLMResponse, Part, Usage
from pipeline.llm.retry import RetryPolicy
from pipeline.queue import QueueClient
from pipeline.queue.context import JobContext
from pipeline.queue.job import Job, State
from pipeline.redis.keys import Keys
from pipeline.services import Services, open_services
from pipeline.settings import load_settings
from tests.support.scripted import ScriptedProvider

MODEL = "gemini-3.5-flash-lite"
FAST = RetryPolicy(max_attempts=2, initial_delay_s=0.01, max_delay_s=0.02, jitter_s=0.01)


def _request(model: str = MODEL, text: str = "summarise this") -> LLMRequest:
    return LLMRequest(model=model, parts=(Part(text=text),), prompt_version="p1",
                      max_output_tokens=256)  # fmt: skip


def _ok() -> LLMResponse:
    return LLMResponse(text="fine", usage=Usage(input_tokens=100, output_tokens=40),
                       model_version=MODEL + "-001", latency_s=0.01)  # fmt: skip


def _ctx(client: QueueClient, batch: str) -> JobContext:
    job = Job(id=f"job-{batch}", task="t", queue="default", state=State.ACTIVE, args=[],
              kwargs={}, priority=0, attempt=1, max_attempts=3, expected_s=1.0, timeout_s=60.0,
              retry_delays_s=[], batch=batch)  # fmt: skip
    return JobContext(job=job, client=client, worker_id="w")


async def _services(
    aredis: aioredis.Redis, keys: Keys, *outcomes: Any, **settings: Any
) -> AsyncIterator[tuple[Services, ScriptedProvider]]:
    client = QueueClient(aredis, keys, load_settings(key_prefix=keys.prefix, **settings))
    provider = ScriptedProvider(MemoryRecorder(), *outcomes)
    services = await open_services(client, provider=provider)
    services.caller.policy = FAST
    try:
        yield services, provider
    finally:
        await services.aclose()


@pytest.fixture
async def services(
    pipeline_env: dict[str, str], aredis: aioredis.Redis, keys: Keys
) -> AsyncIterator[tuple[Services, ScriptedProvider]]:
    async for pair in _services(aredis, keys, _ok()):
        yield pair


async def test_a_budget_full_of_holds_postpones_then_runs(
    services: tuple[Services, ScriptedProvider],
) -> None:
    svc, provider = services
    limit = Decimal("0.01")
    other = await svc.budget.for_call("b1", limit)
    hold = await other.reserve(limit)  # another job's call, on the wire, holds everything
    with pytest.raises(Retry) as info:
        await svc.call(_ctx(svc.client, "b1"), _request(), batch_limit_usd=limit)
    assert info.value.count_attempt is False  # postponed, no attempt spent
    assert info.value.delay_s is not None
    assert HELD_BUDGET_RETRY_S <= info.value.delay_s <= HELD_BUDGET_RETRY_S + HELD_BUDGET_JITTER_S
    assert provider.sent == []

    await other.settle(hold, Decimal("0.001"))  # it cost far less than its worst case
    response = await svc.call(_ctx(svc.client, "b1"), _request(), batch_limit_usd=limit)
    assert response.text == "fine" and len(provider.sent) == 1


async def test_spend_that_cannot_fit_ends_the_job_over_budget(
    services: tuple[Services, ScriptedProvider],
) -> None:
    svc, provider = services
    with pytest.raises(OverBudget, match="would be exceeded"):
        await svc.call(_ctx(svc.client, "b2"), _request(), batch_limit_usd=Decimal("0.0000001"))
    assert provider.sent == []


async def test_unknown_model_fails_at_once(services: tuple[Services, ScriptedProvider]) -> None:
    svc, provider = services
    with pytest.raises(Permanent, match="unknown model 'no-such-model'"):
        await svc.call(_ctx(svc.client, "b3"), _request(model="no-such-model"))
    assert provider.sent == []


async def test_over_limit_fails_at_once(
    pipeline_env: dict[str, str], aredis: aioredis.Redis, keys: Keys
) -> None:
    async for svc, provider in _services(aredis, keys, _ok(), tpm=50):
        with pytest.raises(Permanent, match="can never fit"):  # counted 100 tokens > 50/min
            await svc.call(_ctx(svc.client, "b4"), _request())
        assert provider.sent == []


async def test_non_retryable_failure_fails_at_once_but_5xx_stays_retryable(
    pipeline_env: dict[str, str], aredis: aioredis.Redis, keys: Keys
) -> None:
    broken = ProviderFailure(0, "UNKNOWN", "the SDK choked", retryable=False)
    busy = ProviderFailure(503, "UNAVAILABLE", "overloaded", retryable=True)
    async for svc, provider in _services(aredis, keys, broken, busy, busy):
        with pytest.raises(Permanent, match="the SDK choked"):
            await svc.call(_ctx(svc.client, "b5"), _request(text="one"))
        with pytest.raises(Retry, match="still failing after 2 attempts") as info:
            await svc.call(_ctx(svc.client, "b5"), _request(text="two"))  # the queue retries
        assert info.value.count_attempt and info.value.reason == Reason.PROVIDER_ERROR
        assert len(provider.sent) == 3
