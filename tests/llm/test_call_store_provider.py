"""The call store keeps paid answers from being paid again, per provider: an answer the
emulator gave in a rehearsal is never replayed to a run against Gemini (same Redis, same
request), nor is its token count (a budget's reservation rests on it), through the real
google-genai client over HTTP to the emulator."""

from __future__ import annotations

from decimal import Decimal

import redis.asyncio as aioredis

from pipeline.ledger.budget import Budget
from pipeline.llm.attempts import MemoryRecorder
from pipeline.llm.caller import LLMCaller
from pipeline.llm.callstore import CallStore, call_key
from pipeline.llm.gemini import GeminiProvider
from pipeline.llm.limiter import Limiter
from pipeline.llm.pricing import PriceTable
from pipeline.llm.provider import LLMRequest, Part
from pipeline.llm.retry import RetryPolicy
from pipeline.redis.keys import Keys
from pipeline.settings import load_settings
from tests.support.emulator import start_emulator
from tests.support.pdfs import make_pdf

MODEL = "gemini-3.5-flash-lite"


async def test_an_emulator_answer_is_not_replayed_as_geminis(
    aredis: aioredis.Redis, keys: Keys
) -> None:
    settings = load_settings(rpm=6000, tpm=10_000_000)
    request = LLMRequest(model=MODEL, parts=(Part.pdf(make_pdf(1)), Part(text="Summarise.")))
    store = CallStore(aredis, keys, ttl_s=60)
    budget = Budget(aredis, keys, settings)
    with start_emulator() as emu:
        sent, counted, booked = [], [], []
        for name in ("emulator", "emulator", "gemini"):
            provider = GeminiProvider(api_key=emu.api_key, base_url=emu.base_url, name=name)
            recorder = MemoryRecorder()
            caller = LLMCaller(provider, Limiter(aredis, keys, settings), store,
                               recorder, PriceTable.load(),
                               policy=RetryPolicy(max_attempts=2))  # fmt: skip
            await caller.call(request, budget=await budget.for_call("b", Decimal(1)))
            await provider.aclose()
            sent.append(emu.stats()["generate_requests"])
            counted.append(emu.stats()["count_requests"])
            booked += [(c.provider, c.outcome.value) for c in recorder.calls.values()]
    # the rehearsal's second call is answered from the store; Gemini's is asked for real
    assert sent == [1, 1, 2]
    assert counted == [1, 1, 2]  # Gemini's own count, not the rehearsal's figure
    # each ledger row says who answered (a cost report tells a rehearsal's calls apart)
    assert booked == [("emulator", "ok"), ("emulator", "from_store"), ("gemini", "ok")]
    assert call_key(request, "emulator") != call_key(request, "gemini")
    assert await store.get(call_key(request, "gemini")) is not None
