"""The limiter never deadlocks, and never lets more than the limit through: properties over
limits and histories of 429s, checked on the real Lua scripts and the real Redis.

Hypothesis draws a limit and a history — permits taken, 429s with and without RetryInfo,
successes, time passing — and plays it against the shared bucket. Time is the limiter's
`clock_offset_ms` added to Redis TIME, so a real 60 s minute costs nothing to wait through
and every example ends in milliseconds. After any history, once the pause the last 429
asked for is over, a request must be granted within one period / (1 - safety margin);
and no window of one period may ever hold more requests than the limit, counted when each
went on the wire (a "send" step goes out up to 5 s after its grant, as a busy worker's
does), which is when the provider counts them.

Before the floors in bucket.lua, a limit under ~42/min held 0.5 requests after one 429 and
never granted again; a limit of 1/min refilled one request per ~100 minutes.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.llm.limiter import Limiter, LimiterTuning, Permit
from pipeline.redis.keys import Keys
from pipeline.settings import load_settings

MODEL = "gemini-3.5-flash-lite"
PERIOD_S = 60.0  # a real minute: virtual time makes it free
PERIOD_MS = PERIOD_S * 1000
TUNING = LimiterTuning()
ONE_WINDOW_MS = PERIOD_MS / (1 - TUNING.safety_margin)

# One step of a history: ("wait", ms) | ("take", tokens) | ("send", ms from grant to wire)
# | ("429", retry_delay_s or None) | ("ok",)
waits = st.tuples(st.just("wait"), st.floats(0, 2 * PERIOD_MS))
takes = st.tuples(st.just("take"), st.just(1))
sends = st.tuples(st.just("send"), st.floats(0, 5000))
refusals = st.tuples(st.just("429"), st.none() | st.floats(0, 90))
successes = st.tuples(st.just("ok"))
histories = st.lists(st.one_of(waits, takes, sends, refusals, successes), max_size=40)
# database=None: nothing is written under the checkout (a falsifying example is printed).
EXAMPLES = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@dataclass
class Run:
    """A history in progress: the limiter, its requests (Redis ms, when each went on the
    wire; a "take" is released as sent at once, so at its grant) and the latest pause."""

    limiter: Limiter
    grants: list[float] = field(default_factory=list)
    paused_until_ms: float = 0.0
    largest_call: int = 0

    async def now_ms(self) -> float:
        secs, usecs = await self.limiter.redis.time()
        return secs * 1000 + usecs / 1000 + self.limiter.clock_offset_ms

    async def play(self, step: tuple[object, ...]) -> None:
        kind = step[0]
        if kind == "wait":
            self.limiter.clock_offset_ms += float(step[1])  # type: ignore[arg-type]
        elif kind == "take":
            tokens = int(step[1])  # type: ignore[call-overload]
            got = await self.limiter.try_acquire(MODEL, tokens)
            if isinstance(got, Permit):
                self.grants.append(got.granted_at_ms)
                self.largest_call = max(self.largest_call, tokens)
                await self.limiter.release(got)
        elif kind == "send":
            got = await self.limiter.try_acquire(MODEL, 1)
            if isinstance(got, Permit):
                self.limiter.clock_offset_ms += float(step[1])  # type: ignore[arg-type]
                self.grants.append(await self.limiter.on_wire(got))
                await self.limiter.release(got)
        elif kind == "429":
            delay = step[1]
            learned = await self.limiter.on_rate_limited(MODEL, delay)  # type: ignore[arg-type]
            self.paused_until_ms = max(self.paused_until_ms, learned["paused_until_ms"])
        else:
            await self.limiter.on_success(MODEL)

    async def probe_at(self, at_ms: float, tokens: int = 1) -> Permit | None:
        """Step the clock to `at_ms` and ask once."""
        self.limiter.clock_offset_ms += max(0.0, at_ms - await self.now_ms())
        got = await self.limiter.try_acquire(MODEL, tokens)
        if not isinstance(got, Permit):
            return None
        self.grants.append(got.granted_at_ms)
        await self.limiter.release(got)
        return got


async def _with_limiter(redis_url: str, rpm: int, tpm: int, history: list, probe) -> Run:  # type: ignore[no-untyped-def, type-arg]
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    keys = Keys(f"test-progress-{uuid.uuid4().hex[:12]}")
    limits = load_settings(rpm=rpm, tpm=tpm, rpd=10**9, max_concurrent_calls=10**6)
    run = Run(Limiter(client, keys, limits, period_s=PERIOD_S, tuning=TUNING))
    try:
        for step in history:
            await run.play(step)
        await probe(run)
        return run
    finally:
        async for key in client.scan_iter(match="{" + keys.prefix + "}*", count=1000):
            await client.delete(key)
        await client.aclose()


def _most_in_any_window(grants: list[float]) -> int:
    """The most grants in any half-open window [t, t + one period) — the provider's count."""
    ordered, best, lo = sorted(grants), 0, 0
    for hi, t in enumerate(ordered):
        while ordered[lo] <= t - PERIOD_MS:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@EXAMPLES
@given(rpm=st.integers(1, 2000), history=histories)
def test_a_request_is_always_granted_within_one_window(
    redis_url: str, rpm: int, history: list[tuple[object, ...]]
) -> None:
    async def probe(run: Run) -> None:
        deadline = max(await run.now_ms(), run.paused_until_ms) + ONE_WINDOW_MS
        got = await run.probe_at(deadline)
        state = await run.limiter.state(MODEL)
        assert got is not None, (
            f"limit {rpm}/min: no request granted one window after the pause; "
            f"factor {state['factor']}, {state['requests_left']:.3f} requests in the bucket"
        )

    run = asyncio.run(_with_limiter(redis_url, rpm, 10**9, history, probe))
    most = _most_in_any_window(run.grants)
    assert most <= rpm, f"{most} grants in one {PERIOD_S:g} s window, limit {rpm}"


@EXAMPLES
@given(
    tpm=st.integers(1, 1_000_000),
    history=histories,
    shares=st.lists(st.floats(0, 1), min_size=41, max_size=41),
)
def test_a_call_of_any_allowed_size_is_granted_in_bounded_time(
    redis_url: str, tpm: int, history: list[tuple[object, ...]], shares: list[float]
) -> None:
    """Input tokens: a call of n <= tpm tokens gets through within
    (n + the largest earlier call) / (aimd_floor x the token refill) once the pause is over
    (limiter.py's docstring): slower after 429s, never stuck."""
    sized = [
        ("take", max(1, int(share * tpm))) if step[0] == "take" else step
        for step, share in zip(history, shares, strict=False)
    ]
    final = max(1, int(shares[-1] * tpm))

    async def probe(run: Run) -> None:
        shape = run.limiter.shape(MODEL)
        refill = TUNING.aimd_floor * shape.tok_rate_ms
        bound_ms = max(ONE_WINDOW_MS, (final + run.largest_call) / refill)
        deadline = max(await run.now_ms(), run.paused_until_ms) + bound_ms
        got = await run.probe_at(deadline, final)
        assert got is not None, f"tpm {tpm}: a call of {final} tokens not granted in bound"

    asyncio.run(_with_limiter(redis_url, 10**6, tpm, sized, probe))
