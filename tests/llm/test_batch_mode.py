"""Gemini Batch Mode through the real google-genai client against the emulator:
create with inline requests, PENDING -> RUNNING -> SUCCEEDED, answers matched by key,
found again by display name, cancel and delete, billed apart at 50 %."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest

from pipeline.llm.attempts import Outcome
from pipeline.llm.batch_items import BatchItem, display_name_for
from pipeline.llm.gemini import GeminiProvider, ProviderCallError
from pipeline.llm.pricing import PriceTable
from pipeline.llm.provider import LLMRequest, Part
from pipeline.llm.stop import judge  # the same answer classification as interactive
from tests.support.emulator import start_emulator

MODEL = "gemini-2.5-flash-lite"
SCHEMA = {
    "type": "object",
    "properties": {"summary": {"type": "string"}},
    "required": ["summary"],
}


def _items(n: int) -> list[BatchItem]:
    return [
        BatchItem(
            key=f"doc-{i}",
            request=LLMRequest(
                model=MODEL,
                parts=(Part(text=f"Document {i}: Globex Corporation signed with Initech LLC."),),
                system="You analyse contracts. Answer in JSON.",
                response_schema=SCHEMA,
                max_output_tokens=512,
                thinking_budget=0,
            ),
        )
        for i in range(n)
    ]


async def _until(provider: GeminiProvider, name: str, requests: dict[str, LLMRequest],
                 deadline_s: float = 30.0):  # fmt: skip
    seen = []
    stop = time.monotonic() + deadline_s
    while time.monotonic() < stop:
        job = await provider.batches.get(name, requests)
        if not seen or seen[-1] != job.state:
            seen.append(job.state)
        if job.done:
            return job, seen
        await asyncio.sleep(0.1)
    raise AssertionError(f"batch {name} not done in {deadline_s}s; states seen {seen}")


async def test_batch_runs_to_success_with_answers_by_key_billed_apart_at_half() -> None:
    items = _items(5)
    requests = {i.key: i.request for i in items}
    with start_emulator(batch_delay_s=1.5) as emu:
        provider = GeminiProvider(api_key=emu.api_key, base_url=emu.base_url)
        name = display_name_for(MODEL, items)
        created = await provider.batches.create(MODEL, items, name)
        assert created.name.startswith("batches/")
        assert created.display_name == name
        assert created.state == "PENDING" and not created.done
        job, seen = await _until(provider, created.name, requests)
        await provider.aclose()
        stats = emu.stats()
    assert seen[-1] == "SUCCEEDED" and "RUNNING" in seen
    assert sorted(o.key for o in job.outcomes) == sorted(requests)
    prices = PriceTable.load()
    total = Decimal(0)
    for outcome in job.outcomes:
        assert outcome.failure is None and outcome.response is not None
        response = outcome.response
        assert judge(requests[outcome.key], response, response.usage, None).outcome is Outcome.OK
        assert isinstance(response.data, dict) and response.data["summary"]
        assert response.usage.input_tokens > 0 and response.reported.present
        total += prices.cost(response.model_version, response.usage, job.create_time, batch=True)
    assert stats["generate_requests"] == 0 and stats["billed_total"]["requests"] == 0
    assert stats["batch"]["jobs_created"] == 1
    assert stats["batch"]["requests"] == 5
    assert stats["batch"]["billed_total"]["requests"] == 5
    billed = Decimal(stats["batch"]["billed_total"]["cost_usd"])
    assert abs(billed - total) <= Decimal("0.000001")
    full = sum((prices.cost(o.response.model_version, o.response.usage, job.create_time)
                for o in job.outcomes if o.response), Decimal(0))  # fmt: skip
    assert billed * 2 == pytest.approx(full, abs=Decimal("0.000001"))
    # The system instruction and config reached the emulator with each request.
    assert all(r["mode"] == "batch" and r["max_output_tokens"] == 512 for r in stats["requests"])


async def test_a_created_batch_is_found_again_by_its_display_name() -> None:
    items = _items(2)
    with start_emulator(batch_delay_s=60) as emu:
        provider = GeminiProvider(api_key=emu.api_key, base_url=emu.base_url)
        other = await provider.batches.create(MODEL, _items(1), display_name_for(MODEL, _items(1)))
        name = display_name_for(MODEL, items)
        assert await provider.batches.find(name) is None
        created = await provider.batches.create(MODEL, items, name)
        found = await provider.batches.find(name)
        await provider.aclose()
    assert found is not None and found.name == created.name != other.name
    assert found.state in ("PENDING", "RUNNING")
    # Same content, same name; different content, another name.
    assert display_name_for(MODEL, list(reversed(items))) == name
    assert display_name_for(MODEL, items[:1]) != name


async def test_cancel_stops_the_job_and_bills_nothing() -> None:
    items = _items(3)
    with start_emulator(batch_delay_s=2.0) as emu:
        provider = GeminiProvider(api_key=emu.api_key, base_url=emu.base_url)
        created = await provider.batches.create(MODEL, items, display_name_for(MODEL, items))
        await provider.batches.cancel(created.name)
        job = await provider.batches.get(created.name)
        await asyncio.sleep(2.5)  # past the delay: a cancelled job stays cancelled
        later = await provider.batches.get(created.name)
        await provider.batches.delete(created.name)
        with pytest.raises(ProviderCallError) as gone:
            await provider.batches.get(created.name)
        await provider.aclose()
        stats = emu.stats()
    assert job.state == "CANCELLED" and job.done and later.state == "CANCELLED"
    assert later.outcomes == ()
    assert gone.value.failure.code == 404
    assert stats["batch"]["requests"] == 0
    assert stats["batch"]["billed_total"]["cost_usd"] == "0.000000000"  # as format_usd writes


@pytest.mark.parametrize("end_state", ["FAILED", "EXPIRED"])
async def test_a_failed_or_expired_job_answers_and_bills_nothing(end_state: str) -> None:
    items = _items(2)
    with start_emulator(batch_delay_s=0.3, batch_end_state=end_state) as emu:
        provider = GeminiProvider(api_key=emu.api_key, base_url=emu.base_url)
        created = await provider.batches.create(MODEL, items, display_name_for(MODEL, items))
        job, _ = await _until(provider, created.name, {})
        await provider.aclose()
        stats = emu.stats()
    assert job.state == end_state and job.outcomes == ()
    assert stats["batch"]["requests"] == 0


async def test_create_refuses_bad_groups_before_any_call() -> None:
    with start_emulator() as emu:
        provider = GeminiProvider(api_key=emu.api_key, base_url=emu.base_url)
        with pytest.raises(ValueError, match="at least one"):
            await provider.batches.create(MODEL, [], "x")
        twice = _items(1) * 2
        with pytest.raises(ValueError, match="unique"):
            await provider.batches.create(MODEL, twice, "x")
        with pytest.raises(ValueError, match="must use"):
            await provider.batches.create("gemini-3.8-flash", _items(1), "x")
        await provider.aclose()
        stats = emu.stats()
    assert stats["batch"]["jobs_created"] == 0 and stats["requests_total"] == 0
