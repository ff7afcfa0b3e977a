"""One canonical model id everywhere: each spelling of a model meets the same bucket, the
same price, the same call-store entry and the same document job; a near miss is refused.

Spellings accepted for gemini-3.5-flash-lite: the id itself, the REST resource name
"models/gemini-3.5-flash-lite" and the pricing table's alias "gemini-flash-lite-latest".
Refused: a version or method suffix ("…:streamGenerateContent" once reached the provider).
Real Redis, the real google-genai client against the emulator, the real API and CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from pipeline.errors import SettingsError, UnknownModel
from pipeline.llm.attempts import MemoryRecorder, Outcome
from pipeline.llm.caller import LLMCaller
from pipeline.llm.callstore import CallStore
from pipeline.llm.gemini import GeminiProvider
from pipeline.llm.limiter import Limiter, Permit, Wait
from pipeline.llm.limiter_gate import LimiterGate
from pipeline.llm.pricing import PriceTable
from pipeline.llm.provider import LLMRequest, Part
from pipeline.queue.client import QueueClient
from pipeline.queue.gate import Candidate
from pipeline.redis.connection import connect_redis
from pipeline.redis.keys import Keys
from pipeline.settings import get_settings, load_settings
from tasks.plan import idempotency_key
from tasks.submission import Upload, estimate, submit_uploads
from tests.support.api import api_client, api_settings, pdf_files
from tests.support.cli import EXAMPLES, run_cli
from tests.support.emulator import start_emulator
from tests.support.pdfs import make_pdf

MODEL = "gemini-3.5-flash-lite"
SPELLINGS = [MODEL, f"models/{MODEL}", "gemini-flash-lite-latest"]
NEAR_MISSES = [f"{MODEL}:streamGenerateContent", f"{MODEL}-001", f"models/{MODEL}:generateContent"]


async def test_every_spelling_takes_from_one_bucket(aredis: aioredis.Redis, keys: Keys) -> None:
    """Cap 2: two spellings take both slots, the third waits; one model's keys in Redis."""
    limiter = Limiter(aredis, keys, load_settings(max_concurrent_calls=2))
    first = await limiter.try_acquire(SPELLINGS[1], 1)
    second = await limiter.try_acquire(SPELLINGS[2], 1)
    third = await limiter.try_acquire(SPELLINGS[0], 1)
    assert isinstance(first, Permit) and isinstance(second, Permit)
    assert first.model == second.model == MODEL
    assert isinstance(third, Wait) and third.kind == "concurrency"
    buckets = [k async for k in aredis.scan_iter(match=keys.bucket("*"), count=1000)]
    assert sorted(buckets) == sorted(
        [keys.bucket(MODEL), keys.bucket_leases(MODEL), keys.bucket_sent(MODEL)]
    )

    await limiter.on_rate_limited(f"models/{MODEL}", retry_delay_s=30)
    assert (await limiter.state("gemini-flash-lite-latest"))["paused_until"] is not None
    for name in NEAR_MISSES:
        with pytest.raises(UnknownModel, match="Known models"):
            await limiter.try_acquire(name, 1)


async def test_the_gate_admits_an_unknown_model_without_a_permit(
    aredis: aioredis.Redis, keys: Keys
) -> None:
    """The job then runs and its call fails with UnknownModel (Permanent), taking no quota."""
    gate = LimiterGate(Limiter(aredis, keys, load_settings()))
    hints = {"model": NEAR_MISSES[0], "tokens": 10}
    admitted = await gate.admit(Candidate("j1", "analyze", "default", hints))
    assert admitted.ok and admitted.permit is None
    assert [k async for k in aredis.scan_iter(match=keys.bucket("*"), count=1000)] == []


async def test_per_model_limits_follow_the_canonical_id(
    aredis: aioredis.Redis, keys: Keys
) -> None:
    own = load_settings(limits={f"models/{MODEL}": {"rpm": 7}})
    state = await Limiter(aredis, keys, own).state("gemini-flash-lite-latest")
    assert state["model"] == MODEL and state["limits"]["rpm"] == 7
    with pytest.raises(SettingsError, match=r"gemini-3\.5-flash-lite:streamGenerateContent"):
        Limiter(aredis, keys, load_settings(limits={NEAR_MISSES[0]: {"rpm": 7}}))
    twice = load_settings(limits={MODEL: {"rpm": 7}, f"models/{MODEL}": {"rpm": 9}})
    with pytest.raises(SettingsError, match="keep one"):
        Limiter(aredis, keys, twice)


async def test_one_paid_call_for_every_spelling_and_none_for_a_near_miss(
    aredis: aioredis.Redis, keys: Keys
) -> None:
    """Through google-genai to the emulator: the first spelling pays, the others are
    answered from the call store; a suffixed name never reaches the provider."""
    with start_emulator(latency_s=(0.0, 0.0)) as emu:
        provider = GeminiProvider(api_key=emu.api_key, base_url=emu.base_url)
        limiter = Limiter(aredis, keys, load_settings())
        recorder = MemoryRecorder()
        caller = LLMCaller(provider, limiter, CallStore(aredis, keys, ttl_s=60), recorder,
                           PriceTable.load())  # fmt: skip
        for name in SPELLINGS:
            request = LLMRequest(model=name, parts=(Part(text="one line on tea"),),
                                 max_output_tokens=32)  # fmt: skip
            await caller.call(request)
        for name in NEAR_MISSES:
            with pytest.raises(UnknownModel):
                await caller.call(LLMRequest(model=name, parts=(Part(text="one line on tea"),)))
        stats = emu.stats()
    assert stats["generate_requests"] == 1 and stats["billed"][MODEL]["requests"] == 1
    outcomes = sorted(c.outcome.value for c in recorder.calls.values())
    assert outcomes == sorted([Outcome.OK.value] + [Outcome.FROM_STORE.value] * 2)
    assert {c.model for c in recorder.calls.values()} == {MODEL}
    assert next(c for c in recorder.calls.values() if c.outcome == Outcome.OK).cost_usd > 0


async def test_submission_makes_one_job_whatever_the_spelling(
    pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis
) -> None:
    client = QueueClient(connect_redis(redis_url), settings=get_settings())
    pdf = make_pdf(1, "Spelling test {n}.")
    try:
        subs = [await submit_uploads(client, [Upload("a.pdf", pdf)], model=m) for m in SPELLINGS]
        first = subs[0].documents[0]
        assert [s.documents[0].status for s in subs] == ["queued", "duplicate", "duplicate"]
        assert {s.documents[0].job_id for s in subs} == {first.job_id}
        assert {s.model for s in subs} == {MODEL}
        job = await client.get(first.job_id or "")
        assert job.hints["model"] == MODEL and job.args[0]["model"] == MODEL
        for name in NEAR_MISSES:
            with pytest.raises(UnknownModel):
                await submit_uploads(client, [Upload("b.pdf", make_pdf(2))], model=name)
            with pytest.raises(UnknownModel):
                estimate([Upload("b.pdf", make_pdf(2))], name)
        jobs = list(sredis.scan_iter(match="{" + client.keys.prefix + "}:job:*", count=1000))
        assert len([k for k in jobs if k.count(":") == 2]) == 1, jobs
    finally:
        await client.aclose()
    keys = {idempotency_key("ab" * 32, m, "p1", "gemini") for m in SPELLINGS}
    assert keys == {f"analyze:{'ab' * 32}:{MODEL}:p1:gemini"}


async def test_the_api_form_field_is_canonical(
    tmp_path: Path, redis_url: str, key_prefix: str, aredis: object
) -> None:
    settings = api_settings(tmp_path, redis_url, key_prefix)
    pdf = make_pdf(1, "API spelling {n}.")
    async with api_client(settings) as (client, _):
        bodies = []
        for name in SPELLINGS:
            r = await client.post("/analyze", files=pdf_files(("a.pdf", pdf)),
                                  data={"model": name})  # fmt: skip
            assert r.status_code == 202, r.text
            bodies.append(r.json())
        r = await client.post("/analyze", files=pdf_files(("a.pdf", pdf)),
                              data={"model": NEAR_MISSES[0]})  # fmt: skip
    assert {b["model"] for b in bodies} == {MODEL}
    assert len({b["documents"][0]["job_id"] for b in bodies}) == 1
    assert [b["documents"][0]["status"] for b in bodies][1:] == ["duplicate", "duplicate"]
    assert r.status_code == 422 and "model" in r.json()["detail"]
    assert "Did you mean 'gemini-3.5-flash-lite'?" in r.json()["detail"]


def test_the_cli_model_option_is_canonical(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    runs = [run_cli(pipeline_env, "submit", EXAMPLES[0], "--model", m, "--json") for m in SPELLINGS]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    subs = [json.loads(r.stdout) for r in runs]
    assert {s["model"] for s in subs} == {MODEL}
    assert len({s["documents"][0]["job_id"] for s in subs}) == 1
    refused = run_cli(pipeline_env, "submit", EXAMPLES[0], "--model", NEAR_MISSES[0])
    assert refused.returncode == 1 and "unknown model" in refused.stderr
    assert "Known models" in refused.stderr and "Traceback" not in refused.stderr
