"""The shared token bucket against a real Redis: arithmetic, sharing, leases, 429s, days.

Periods are shrunk (limit_period_s = 1 or 10 s) so nothing waits a real minute; times
compared are the Redis TIME stamps the scripts put on permits, never wall-clock bounds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from pipeline.errors import DailyQuotaExhausted, OverLimit
from pipeline.llm.limiter import (
    Limiter,
    LimiterTuning,
    Permit,
    Wait,
    pacific_midnights,
)
from pipeline.llm.limiter_gate import LimiterGate
from pipeline.queue.gate import Candidate
from pipeline.redis.keys import Keys
from pipeline.settings import Settings, load_settings

MODEL = "gemini-3.5-flash-lite"  # a model in config/pricing.toml: the limiter refuses others


def _settings(**limits: int) -> Settings:
    base = {"rpm": 1000, "tpm": 1_000_000, "rpd": 10_000, "max_concurrent_calls": 64}
    base.update(limits)
    return load_settings(**base)


@pytest.fixture
async def second_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=False)  # other decoding, too
    yield client
    await client.aclose()


async def _redis_now_ms(client: aioredis.Redis) -> float:
    secs, usecs = await client.time()
    return secs * 1000 + usecs / 1000


async def test_burst_then_wait_matches_refill_arithmetic(aredis: aioredis.Redis, keys: Keys):
    limiter = Limiter(aredis, keys, _settings(rpm=100), period_s=10)
    shape = limiter.shape(MODEL)
    # 100 per 10 s: the window holds 100 per 10.3 s; the smoothing bucket bursts 5 % of the
    # limit (5) and refills at the full limit (10/s), faster than the window frees requests.
    assert (shape.window_n, shape.window_ms) == (100, 10_300)
    assert shape.req_cap == 5
    assert shape.req_rate_ms == pytest.approx(100 / 10_000)

    burst = [await limiter.try_acquire(MODEL, 1) for _ in range(5)]
    assert all(isinstance(p, Permit) for p in burst)
    denied = await limiter.try_acquire(MODEL, 1)
    assert isinstance(denied, Wait) and denied.kind == "requests"
    assert 0 < denied.retry_after_s <= 1 / (shape.req_rate_ms * 1000) + 0.002

    sixth = await limiter.acquire(MODEL, 1, deadline_s=5)
    first = burst[0]
    assert isinstance(first, Permit)
    # The sixth request needed one whole request's worth of refill since the bucket was made.
    assert sixth.granted_at_ms - first.granted_at_ms >= 1 / shape.req_rate_ms - 0.5


def _at(limiter: Limiter, offset_ms: float) -> Limiter:
    """The same limiter seen `offset_ms` later (virtual time: nothing sleeps)."""
    return Limiter(limiter.redis, limiter.keys, limiter.settings, period_s=limiter.period_s,
                   tuning=limiter.tuning, clock_offset_ms=offset_ms)  # fmt: skip


async def test_the_window_counts_a_request_from_when_it_went_out(
    aredis: aioredis.Redis, keys: Keys
):
    """2 per 10 s (window 10.3 s). `a` is granted at 0 but goes out at 9 s; `b` goes out at
    1 s. At 12 s b has left the window, a has not: one more fits, the next waits until a
    leaves (9 + 10.3 s), not until its grant had (10.3 s). A request handed back unsent
    leaves the window at once."""
    tuning = LimiterTuning(burst_fraction=1.0)  # the smoothing bucket out of the way
    base = Limiter(aredis, keys, _settings(rpm=2), period_s=10, tuning=tuning)
    a = await base.try_acquire(MODEL, 1)
    assert isinstance(a, Permit)
    b = await _at(base, 1000).try_acquire(MODEL, 1)
    assert isinstance(b, Permit)
    await _at(base, 1000).on_wire(b)
    await _at(base, 1000).release(b)
    full = await _at(base, 2000).try_acquire(MODEL, 1)
    assert isinstance(full, Wait) and full.kind == "window"  # a, not sent yet, counts
    await _at(base, 9000).on_wire(a)
    await _at(base, 9500).release(a)

    later = _at(base, 12_000)
    c = await later.try_acquire(MODEL, 1)
    assert isinstance(c, Permit)
    denied = await later.try_acquire(MODEL, 1)
    assert isinstance(denied, Wait) and denied.kind == "window"
    assert denied.retry_after_s == pytest.approx(9 + 10.3 - 12, abs=0.05)
    assert await later.release(c, sent=False)
    assert isinstance(await later.try_acquire(MODEL, 1), Permit)


async def test_a_sent_request_never_stamped_is_stamped_at_release(
    aredis: aioredis.Redis, keys: Keys
):
    """A provider without HTTP (or a failed stamp): released as sent at 5 s, the request
    counts from 5 s (it left before then), so the window is full until 15.3 s."""
    tuning = LimiterTuning(burst_fraction=1.0)
    base = Limiter(aredis, keys, _settings(rpm=1), period_s=10, tuning=tuning)
    a = await base.try_acquire(MODEL, 1)
    assert isinstance(a, Permit)
    await _at(base, 5000).release(a)
    denied = await _at(base, 11_000).try_acquire(MODEL, 1)
    assert isinstance(denied, Wait) and denied.kind == "window"
    assert denied.retry_after_s == pytest.approx(15.3 - 11, abs=0.05)
    assert isinstance(await _at(base, 15_400).try_acquire(MODEL, 1), Permit)


async def test_a_dead_workers_grant_leaves_the_window(aredis: aioredis.Redis, keys: Keys):
    """A worker that dies between grant and send (nothing stamps, nothing releases) holds
    its place in the window for one lease, then one window: quota never leaks for good."""
    tuning = LimiterTuning(burst_fraction=1.0, lease_s=30)
    base = Limiter(aredis, keys, _settings(rpm=1), period_s=10, tuning=tuning)
    assert isinstance(await base.try_acquire(MODEL, 1), Permit)  # then the worker dies
    held = await _at(base, 39_000).try_acquire(MODEL, 1)
    assert isinstance(held, Wait) and held.kind == "window"
    assert isinstance(await _at(base, 40_400).try_acquire(MODEL, 1), Permit)


async def test_token_dimension_waits_and_refuses_impossible_calls(
    aredis: aioredis.Redis, keys: Keys
):
    limiter = Limiter(aredis, keys, _settings(tpm=1000), period_s=10)
    shape = limiter.shape(MODEL)
    assert shape.tok_cap == 48  # 5 % of 970
    assert isinstance(await limiter.try_acquire(MODEL, 40), Permit)
    denied = await limiter.try_acquire(MODEL, 40)
    assert isinstance(denied, Wait) and denied.kind == "tokens"
    # 8 tokens left (plus a sliver of refill); 32 more at 92.2 per second.
    assert 0 < denied.retry_after_s <= 32 / (shape.tok_rate_ms * 1000) + 0.002
    with pytest.raises(OverLimit, match="PIPELINE_TPM"):
        await limiter.try_acquire(MODEL, 5000)


async def test_release_corrects_tokens_to_actual_usage(aredis: aioredis.Redis, keys: Keys):
    limiter = Limiter(aredis, keys, _settings(tpm=1000), period_s=1000)  # refill negligible
    permit = await limiter.try_acquire(MODEL, 40)
    assert isinstance(permit, Permit)
    before = (await limiter.state(MODEL))["tokens_left"]
    assert await limiter.release(permit, actual_input_tokens=10)  # 30 fewer than debited
    after = (await limiter.state(MODEL))["tokens_left"]
    assert after - before == pytest.approx(30, abs=0.5)
    assert (await limiter.state(MODEL))["in_flight"] == 0


@pytest.mark.slow
async def test_many_clients_never_exceed_the_limit_in_any_window(
    aredis: aioredis.Redis, redis_url: str, keys: Keys
):
    """3 clients x 8 coroutines take 96 permits at 30 per 1 s: every one is granted (no
    coroutine starves, however slowly a busy machine runs them) and no 1 s window of Redis
    TIME holds more than 30. The rate achieved is a figure: bench/limiter.py --direct."""
    settings = _settings(rpm=30)
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(3)]
    limiters = [Limiter(c, keys, settings, period_s=1.0) for c in clients]
    grants: list[float] = []

    async def worker(limiter: Limiter) -> None:
        for _ in range(4):
            permit = await limiter.acquire(MODEL, 10)
            grants.append(permit.granted_at_ms)
            await limiter.release(permit)

    try:
        await asyncio.wait_for(
            asyncio.gather(*(worker(lim) for lim in limiters for _ in range(8))), timeout=120
        )
    finally:
        for c in clients:
            await c.aclose()
    grants.sort()
    assert len(grants) == 96
    for i, start in enumerate(grants):
        in_window = sum(1 for g in grants[i:] if g < start + 1000)
        assert in_window <= 30, f"{in_window} grants in the 1 s window from {start}"


async def test_concurrency_cap_and_crashed_lease_comes_back(aredis: aioredis.Redis, keys: Keys):
    tuning = LimiterTuning(lease_s=0.3, concurrency_poll_s=0.05)
    limiter = Limiter(aredis, keys, _settings(max_concurrent_calls=2), tuning=tuning)
    a = await limiter.try_acquire(MODEL, 1)
    b = await limiter.try_acquire(MODEL, 1)
    assert isinstance(a, Permit) and isinstance(b, Permit)
    blocked = await limiter.try_acquire(MODEL, 1)
    assert isinstance(blocked, Wait) and blocked.kind == "concurrency"

    assert await limiter.release(a)
    c = await limiter.try_acquire(MODEL, 1)
    assert isinstance(c, Permit)
    assert (await limiter.state(MODEL))["in_flight"] == 2

    # b and c now belong to a "crashed" worker: nobody releases them. Their leases lapse.
    d = await limiter.acquire(MODEL, 1, deadline_s=5)
    assert d.granted_at_ms >= min(b.lease_until_ms, c.lease_until_ms)
    assert not await limiter.release(b) or not await limiter.release(c)  # one had lapsed


async def test_renew_keeps_a_long_call_holding_its_slot(aredis: aioredis.Redis, keys: Keys):
    tuning = LimiterTuning(lease_s=0.3, concurrency_poll_s=0.05)
    limiter = Limiter(aredis, keys, _settings(max_concurrent_calls=1), tuning=tuning)
    held = await limiter.acquire(MODEL, 1)
    deadline = held.lease_until_ms + 200
    while await _redis_now_ms(aredis) < deadline:  # keep renewing past the first lease
        assert await limiter.renew(held)
        got = await limiter.try_acquire(MODEL, 1)
        assert isinstance(got, Wait) and got.kind == "concurrency"
        await asyncio.sleep(0.05)
    assert await limiter.release(held)


async def test_429_pause_is_shared_by_every_instance(
    aredis: aioredis.Redis, second_client: aioredis.Redis, keys: Keys
):
    settings = _settings()
    one = Limiter(aredis, keys, settings)
    two = Limiter(second_client, keys, settings)
    assert isinstance(await two.try_acquire(MODEL, 1), Permit)
    learned = await one.on_rate_limited(MODEL, retry_delay_s=0.4)
    waited = await two.try_acquire(MODEL, 1)
    assert isinstance(waited, Wait) and waited.kind == "paused"
    assert 0 < waited.retry_after_s <= 0.4
    permit = await two.acquire(MODEL, 1, deadline_s=5)
    assert permit.granted_at_ms >= learned["paused_until_ms"]
    state = await one.state(MODEL)
    assert state["factor"] == pytest.approx(0.5)


async def test_aimd_drops_once_per_event_and_recovers_to_the_ceiling(
    aredis: aioredis.Redis, keys: Keys
):
    limiter = Limiter(aredis, keys, _settings(rpm=600), tuning=LimiterTuning(aimd_cooldown_s=60))
    full = (await limiter.state(MODEL))["effective_rpm"]
    assert (await limiter.on_rate_limited(MODEL, 0.001))["factor"] == pytest.approx(0.5)
    # A second worker reporting the same overload does not halve again.
    assert (await limiter.on_rate_limited(MODEL, 0.001))["factor"] == pytest.approx(0.5)
    assert (await limiter.state(MODEL))["effective_rpm"] == pytest.approx(full / 2)
    factors = [await limiter.on_success(MODEL) for _ in range(40)]
    assert factors[0] == pytest.approx(0.52)
    assert factors[-1] == 1.0 and max(factors) == 1.0
    assert (await limiter.state(MODEL))["effective_rpm"] == pytest.approx(full)

    fast = Limiter(aredis, keys, _settings(), tuning=LimiterTuning(aimd_cooldown_s=0))
    for _ in range(10):
        learned = await fast.on_rate_limited(MODEL, 0.001)
    assert learned["factor"] == pytest.approx(0.1)  # the floor


async def test_429_without_retry_info_backs_off_exponentially(aredis: aioredis.Redis, keys: Keys):
    tuning = LimiterTuning(aimd_cooldown_s=0, backoff_initial_s=0.2, backoff_max_s=0.5)
    limiter = Limiter(aredis, keys, _settings(), tuning=tuning)
    pauses = []
    for _ in range(4):
        now = await _redis_now_ms(aredis)
        pauses.append((await limiter.on_rate_limited(MODEL, None))["paused_until_ms"] - now)
    assert pauses[0] == pytest.approx(200, abs=50)
    assert pauses[1] == pytest.approx(400, abs=50)
    assert pauses[2] == pytest.approx(500, abs=50) and pauses[3] == pytest.approx(500, abs=50)
    await limiter.on_success(MODEL)
    later = await limiter.acquire(MODEL, 1, deadline_s=5)
    after_success = (await limiter.on_rate_limited(MODEL, None))["paused_until_ms"]
    assert after_success - later.granted_at_ms == pytest.approx(200, abs=100)


async def test_per_day_quota_stops_dispatch_until_pacific_midnight(
    aredis: aioredis.Redis, second_client: aioredis.Redis, keys: Keys
):
    settings = _settings()
    one = Limiter(aredis, keys, settings)
    two = Limiter(second_client, keys, settings)
    learned = await one.on_rate_limited(MODEL, 30.0, per_day=True)
    assert learned["daily_exhausted_until_ms"] in pacific_midnights()
    waited = await two.try_acquire(MODEL, 1)
    assert isinstance(waited, Wait) and waited.daily
    assert "daily quota exhausted until" in waited.reason
    assert waited.retry_after_s <= 25 * 3600
    with pytest.raises(DailyQuotaExhausted, match="resumes"):
        await two.acquire(MODEL, 1)
    assert (await two.state(MODEL))["daily_exhausted_until"] is not None


async def test_requests_per_day_counter(aredis: aioredis.Redis, keys: Keys):
    limiter = Limiter(aredis, keys, _settings(rpd=3))
    permits = [await limiter.try_acquire(MODEL, 1) for _ in range(3)]
    assert all(isinstance(p, Permit) for p in permits)
    over = await limiter.try_acquire(MODEL, 1)
    assert isinstance(over, Wait) and over.kind == "daily_count"
    assert "all 3 requests for today used" in over.reason
    assert over.until_ms in pacific_midnights()
    first = permits[0]
    assert isinstance(first, Permit)
    await limiter.release(first, sent=False)  # never sent: today's count gets it back
    assert (await limiter.state(MODEL))["requests_today"] == 2
    assert isinstance(await limiter.try_acquire(MODEL, 1), Permit)


async def test_gate_admits_by_hints_and_refunds_unused_permits(
    aredis: aioredis.Redis, keys: Keys
):
    limiter = Limiter(aredis, keys, _settings(max_concurrent_calls=1))
    gate = LimiterGate(limiter)
    plain = await gate.admit(Candidate("j0", "parse", "default"))
    assert plain.ok and plain.permit is None

    llm = Candidate("j1", "analyze", "default", {"model": MODEL, "tokens": 500})
    admitted = await gate.admit(llm)
    assert admitted.ok and isinstance(admitted.permit, Permit)
    assert admitted.permit.tokens == 500
    refused = await gate.admit(Candidate("j2", "analyze", "default", {"model": MODEL}))
    assert not refused.ok and refused.retry_after_s > 0 and "in flight" in refused.reason

    await gate.release(admitted)
    state = await limiter.state(MODEL)
    assert state["in_flight"] == 0 and state["requests_today"] == 0
    assert (await gate.admit(Candidate("j2", "analyze", "default", {"model": MODEL}))).ok
