"""The shared token bucket across real worker processes, through google-genai and the emulator.

Time is scaled so the suite stays fast: `PIPELINE_LIMIT_PERIOD_S` and the emulator's
`window_s` both shrink "a minute" to a few seconds; "120 requests per minute" below means
120 per WINDOW_S. Tests assert invariants with deadlines sized for a busy 2-core machine:
nothing lost, nothing paid twice, no 429 the scenario does not force, the provider's quota
never exceeded. How close to the quota the bucket runs (achieved rate, admission waits) is
a figure, measured by bench/limiter.py, not asserted here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.llm.limiter import Limiter
from pipeline.queue import QueueClient, State
from pipeline.settings import load_settings
from tests.support.emulator import RunningEmulator, start_emulator
from tests.support.llm_tasks import MODEL
from tests.support.paid_workers import enqueue_asks, llm_env, wait_done, workers
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

WINDOW_S = 10.0
KEY_MODEL = f"emulator-key/{MODEL}"


def _env(emu: RunningEmulator, tmp_path: Path, **settings: object) -> dict[str, str]:
    base = {"limit_period_s": WINDOW_S, "tpm": 10**9, "rpd": 10**6}
    return llm_env(
        emu, f"sqlite:///{tmp_path / 'ledger.db'}", str(tmp_path / "home"), **{**base, **settings}
    )


def rate_per_s(stamps: Sequence[float]) -> float:
    """Requests per second over the busy interval: from the first arrival to the last."""
    ordered = sorted(stamps)
    return (len(ordered) - 1) / (ordered[-1] - ordered[0])


def max_in_window(stamps: Sequence[float], window_s: float) -> int:
    """The most arrivals in any window of `window_s` (the emulator's own sliding window)."""
    ordered = sorted(stamps)
    best, lo = 0, 0
    for hi, t in enumerate(ordered):
        while ordered[lo] <= t - window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def test_four_workers_share_one_bucket_without_a_429(
    client: QueueClient, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """4 processes x 50 slots, 150 jobs, a setting of 60 per window against a provider quota
    of 100: the provider never refuses a request and every job completes, paid once.

    The quota's headroom over the setting is for the delay between a permit (Redis TIME)
    and the request's arrival (the emulator's clock), which a busy machine stretches; it is
    still far below what four buckets of 60 would send (about 230 a window), so a bucket
    per worker instead of one shared bucket fails this test with 429s."""
    with start_emulator(rpm=100, window_s=WINDOW_S, latency_s=(0.02, 0.1)) as emu:
        env = _env(emu, tmp_path, rpm=60)
        with workers(redis_url, key_prefix, env, count=4) as procs:
            ids = await enqueue_asks(client, 150, batch="b-rate")
            jobs = await wait_done(client, ids, timeout_s=300, procs=procs)
        stats = emu.stats()
    assert [j.state for j in jobs].count(State.COMPLETE) == 150
    assert stats["rate_limited"] == 0, stats["throttled"]
    assert stats["billed"][MODEL]["requests"] == 150 and stats["billed_repeats"] == 0
    assert max_in_window(stats["timestamps"][MODEL], WINDOW_S) <= 100


def _warm(emu: RunningEmulator) -> None:
    """One call, then a reset of the emulator's counts: its first answer in a process does
    ~1 s of one-time work before counting (bench/limiter.py `_warm_up`), which Google's
    counter does not, so a cold emulator counts the first requests late."""
    url = f"{emu.base_url}/v1beta/models/{MODEL}:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "warm-up"}]}]}
    headers = {"x-goog-api-key": emu.api_key}
    httpx.post(url, json=body, headers=headers, timeout=60).raise_for_status()
    emu.reset()


async def test_workers_at_the_providers_own_quota_get_no_429(
    client: QueueClient, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """The setting IS the provider's quota: 30 per 20 s window, 4 processes x 10 slots, 75
    jobs (2.5 windows, so the window's echo is crossed twice). The limiter's window counts
    each request from when its body left (the google-genai client's HTTP hook), so a request
    granted early and sent late can no longer meet the next one inside the provider's
    window: no 429, every job complete and paid once, never more than 30 in any window of
    the emulator's own clock. (How much of the quota is used is bench/limiter.py's figure.)"""
    window_s, quota = 20.0, 30
    with start_emulator(subprocess=True, rpm=quota, window_s=window_s,
                        latency_s=(0.02, 0.1)) as emu:  # fmt: skip
        _warm(emu)
        env = _env(emu, tmp_path, rpm=quota, limit_period_s=window_s)
        with workers(redis_url, key_prefix, env, count=4, concurrency=10) as procs:
            ids = await enqueue_asks(client, 75, batch="b-quota")
            jobs = await wait_done(client, ids, timeout_s=300, procs=procs)
        stats = emu.stats()
    assert [j.state for j in jobs].count(State.COMPLETE) == 75
    assert stats["rate_limited"] == 0, stats["throttled"]
    assert stats["billed"][MODEL]["requests"] == 75 and stats["billed_repeats"] == 0
    assert max_in_window(stats["timestamps"][MODEL], window_s) <= quota


async def test_a_quota_far_below_the_setting_never_stalls(
    client: QueueClient, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """PIPELINE_RPM=10 against a provider quota of 3 (per scaled minute). The bucket's
    burst is one request at this limit, so before the progress floors the first 429 left it
    holding half a request, and nothing was ever sent again. Now every job completes, each
    paid once, and the limiter has learned a lower rate."""
    window_s = 3.0
    with start_emulator(rpm=3, window_s=window_s, latency_s=(0.02, 0.1)) as emu:
        env = _env(emu, tmp_path, rpm=10, limit_period_s=window_s)
        with workers(redis_url, key_prefix, env, count=2, concurrency=4) as procs:
            ids = await enqueue_asks(client, 12, batch="b-small")
            jobs = await wait_done(client, ids, timeout_s=300, procs=procs)
        stats = emu.stats()
    limiter = Limiter(client.redis, client.keys, load_settings(
        key_prefix=key_prefix, limit_period_s=window_s, rpm=10))  # fmt: skip
    state = await limiter.state(MODEL)
    assert [j.state for j in jobs].count(State.COMPLETE) == 12
    assert stats["throttled"].get(KEY_MODEL), "the scenario must force 429s"
    assert stats["billed"][MODEL]["requests"] == 12 and stats["billed_repeats"] == 0
    assert state["factor"] < 1.0


async def test_a_lower_real_quota_is_honoured_and_learned(
    client: QueueClient, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """Settings say 120 per window, the emulator allows 60. Every job still completes; every
    retry of a 429'd call waits out its retryDelay (ledger); no request reaches the emulator
    inside a retryDelay it announced, except those already on the wire when it answered; and
    the 429s die out: the last part of the run stays within the real quota."""
    with start_emulator(rpm=60, window_s=WINDOW_S, latency_s=(0.02, 0.1)) as emu:
        env = _env(emu, tmp_path, rpm=120)
        with workers(redis_url, key_prefix, env, count=2) as procs:
            ids = await enqueue_asks(client, 150, batch="b-learn")
            jobs = await wait_done(client, ids, timeout_s=120, procs=procs)
        stats = emu.stats()
    assert [j.state for j in jobs].count(State.COMPLETE) == 150
    throttled = stats["throttled"].get(KEY_MODEL, [])
    arrivals = sorted(stats["arrivals"][KEY_MODEL])
    assert throttled, "the test needs the emulator to have refused something"
    # A request permitted before the worker had read the 429 is already on its way: from
    # its permit (Redis) to its arrival (the emulator) took up to 0.34 s at a load of ~20.
    in_flight_s = 1.0
    early = [
        (t["at"], a)
        for t in throttled
        for a in arrivals
        if t["at"] + in_flight_s < a < t["at"] + t["retry_delay_s"] - 0.01
    ]
    assert early == [], f"{len(early)} arrivals inside an announced retryDelay"
    assert len(throttled) <= 0.1 * len(arrivals), f"{len(throttled)} 429s: a storm"
    # The last 40 % of the run: the rate the emulator admitted stays at or under the real
    # quota, and refusals are rare (AIMD creeps back up after each cut, so an occasional
    # 429 is how the bucket keeps finding the ceiling; a storm would fail this).
    tail_start = arrivals[0] + 0.6 * (arrivals[-1] - arrivals[0])
    tail = [a for a in arrivals if a >= tail_start]
    refused = sorted(t["at"] for t in throttled if t["at"] >= tail_start)
    admitted = [a for a in tail if a not in set(refused)]
    assert len(refused) <= 0.15 * len(tail), (len(refused), len(tail))
    assert rate_per_s(admitted) * WINDOW_S <= 60 * 1.05


async def test_a_per_day_429_stops_dispatch_and_keeps_jobs_queued(
    client: QueueClient, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """The emulator allows 5 requests a "day" (an hour-long sliding day), our settings far
    more. After the per-day 429 the limiter marks the model exhausted: no further request
    reaches the emulator, and the remaining jobs wait in Redis instead of failing."""
    with start_emulator(rpd=5, day_window_s=3600.0) as emu:
        env = _env(emu, tmp_path, rpm=600)
        with workers(redis_url, key_prefix, env, count=2, concurrency=4) as procs:
            ids = await enqueue_asks(client, 12, batch="b-day")

            async def exhausted() -> dict[str, Any] | None:
                state = await limiter.state(MODEL)
                return state if state["daily_exhausted_until"] else None

            limiter = Limiter(client.redis, client.keys, load_settings(
                key_prefix=key_prefix, limit_period_s=WINDOW_S, rpm=600, rpd=10**6))
            state = await eventually(exhausted, timeout_s=30, what="daily quota marked")
            # The jobs refused mid-call retry after 1 s; then they must sit in their queue.
            await eventually(lambda: _waiting_in_queue(client, ids), timeout_s=30,
                             what="unfinished jobs back in their queue")
            seen = emu.stats()["generate_requests"]
            # A negative check needs a window: gate polls, sweeps and retries all get 3 s.
            await _unchanged(lambda: emu.stats()["generate_requests"], seen, for_s=3.0)
            jobs = [await client.get(i) for i in ids]
            stats = emu.stats()
            alive = all(p.proc.poll() is None for p in procs)
    assert alive
    assert state["daily_exhausted_until"] is not None
    assert stats["billed"][MODEL]["requests"] == 5
    assert stats["generate_requests"] == seen, "requests kept coming after the per-day 429"
    states = [j.state for j in jobs]
    assert states.count(State.COMPLETE) == 5
    assert not [s for s in states if s in (State.FAILED, State.DEAD)], states
    assert all(s in (State.QUEUED, State.SCHEDULED) for s in states if s != State.COMPLETE)


async def _waiting_in_queue(client: QueueClient, ids: list[str]) -> bool:
    states = [(await client.get(i)).state for i in ids]
    rest = [s for s in states if s != State.COMPLETE]
    return len(rest) == len(ids) - 5 and all(s == State.QUEUED for s in rest)


async def _unchanged(read: Callable[[], object], expected: object, for_s: float) -> None:
    """Fail as soon as `read()` differs from `expected`; pass after `for_s` seconds."""
    deadline = time.monotonic() + for_s
    while time.monotonic() < deadline:
        assert read() == expected
        await asyncio.sleep(0.1)
