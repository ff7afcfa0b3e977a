"""The reservation is the call's bound: countTokens input (cached per prompt and model) at
the input rate — the long-context rate past the threshold — plus maxOutputTokens and the
thinking budget at the output rate. Real Redis budget and limiter, google-genai against the
emulator."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import redis.asyncio as aioredis

from pipeline.ledger.budget import Budget
from pipeline.llm.attempts import MemoryRecorder
from pipeline.llm.caller import LLMCaller
from pipeline.llm.callstore import CallStore
from pipeline.llm.gemini import GeminiProvider
from pipeline.llm.limiter import Limiter
from pipeline.llm.pricing import PriceTable
from pipeline.llm.provider import LLMRequest, Part, Usage
from pipeline.redis.keys import Keys
from pipeline.settings import load_settings
from tests.support.emulator import start_emulator
from tests.support.paid_rig import set_faults
from tests.support.pdfs import make_pdf

PRO = "gemini-3.1-pro-preview"  # long-context tier above 200,000 prompt tokens


async def test_a_long_prompt_is_reserved_at_the_long_context_rate_and_counted_once(
    aredis: aioredis.Redis, keys: Keys
) -> None:
    parts = (Part.pdf(make_pdf(1, "HUGE scan")), Part(text="Go"))
    request = LLMRequest(model=PRO, parts=parts, system="Answer briefly.",
                         max_output_tokens=512, thinking_budget=128)  # fmt: skip
    prices = PriceTable.load()
    with start_emulator() as emu:
        set_faults(emu, {"kind": "inflate", "when": "HUGE", "tokens": 250_000})
        provider = GeminiProvider(api_key=emu.api_key, base_url=emu.base_url)
        settings = load_settings(rpm=6000, tpm=10_000_000)
        recorder = MemoryRecorder()
        caller = LLMCaller(provider, Limiter(aredis, keys, settings), CallStore(aredis, keys),
                           recorder, prices)  # fmt: skip
        budget = Budget(aredis, keys, settings)
        try:
            await caller.call(request, budget=await budget.for_call("b", Decimal("10")))
            again = LLMRequest(**{**request.__dict__, "max_output_tokens": 1024})
            await caller.call(again, budget=await budget.for_call("b", Decimal("10")))
        finally:
            await provider.aclose()
        stats = emu.stats()
    first, second = sorted(recorder.calls.values(), key=lambda c: c.started_at)
    counted = first.input_tokens  # the emulator counts and bills the same prompt alike
    assert counted > 250_000
    now = datetime.now(UTC)
    bound = prices.cost(PRO, Usage(input_tokens=counted, output_tokens=512 + 128), now)
    assert first.estimated_cost_usd == bound
    price = prices.price(PRO, now)
    assert price.is_long(counted) and price.long_input is not None
    assert bound >= (counted * price.long_input / 1_000_000)  # the higher tier, whole request
    for call in (first, second):
        assert 0 < call.cost_usd <= call.estimated_cost_usd
    assert stats["count_requests"] == 1  # the second call's prompt count came from Redis
    status = (await budget.status("b", Decimal("10")))["batch"]
    assert status.spent_usd == first.cost_usd + second.cost_usd and status.reserved_usd == 0
