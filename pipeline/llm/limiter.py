"""One request window and token bucket per model, shared by every worker through Redis.

Why in Redis and not per process: Gemini counts requests/minute, input tokens/minute and
requests/day per *project* (GEMINI.md §3.2), so four workers with a local limiter each
would send four times the quota (celery#5732). Every decision is one Lua script reading
Redis TIME, so no client clock and no read-modify-write race is involved.

Algorithm (named, and built as named). Requests: a sliding window log. GEMINI.md does not
say how Google cuts its minute, so any 60 s window must hold at most the limit; the log
admits a request while fewer than `limit` requests are stamped within the last
period x (1 + window_margin) (61.8 s of a minute). A request is stamped when its body has
gone on the wire (pipeline/llm/wire.py: the google-genai client's httpx hook), not when it
is granted: the provider counts arrivals, and the delay from grant to send (a job's start,
the body's encoding, a busy machine) varies by seconds, so a window of grant stamps let a
request granted early and sent late meet the next one inside the provider's minute. Until
its stamp a grant counts from the future (grant + one lease), so it is in the window from
the start; a release stamps a sent request that was never stamped, a release unsent takes
it out, and a dead worker's grant leaves one lease + one window later. The margin is what
separates our stamp (after the send) from the provider's count (network, its queue); a
token bucket of 5 % of the limit, refilled at the full limit, only smooths bursts (a run's
first minute, and its echo a window later). A bucket alone runs at (limit - burst) a
minute by construction (85.8 % at 10/min); the window runs at up to 1/(1 + margin).

Input tokens: a continuous-refill token bucket. With capacity C and refill rate r, a window
of length P admits at most C + r·P; we target C + r·P = (1 - safety_margin)·limit, with a
small burst C (5 % of it), so the long-run rate is about 92 % of the limit. A request
larger than the token burst waits for a full bucket and leaves it in debt, so it may
overshoot one window by its own excess over the burst. Shapes: bucket.py.

Around them: a daily counter reset at midnight America/Los_Angeles, a shared pause
set by 429s (RetryInfo, else exponential back-off), a "daily quota exhausted" mark, an
AIMD factor f (×0.5 per 429 event, +2 % per success, floor 0.1, the setting is the
ceiling) that scales the window's count (max(1, floor(limit·f))), capacity and refill, and
a cap on concurrent calls held as leases that expire, so a crashed worker's slot comes back.

Progress guarantee (for any configured limit >= 1 per period, any history of 429s and
successes): once the pause the provider asked for is over, a request is granted within
one period / (1 - safety_margin) — 61.9 s for a 60 s minute — unless the concurrency cap
(slots come back on release or lease expiry), a dead worker's unsent grant (one lease) or
the per-day quota holds it. The window frees every request within period x (1 + margin),
no longer (window_margin <= safety_margin / (1 - safety_margin)). Two floors make this
hold, because f persists in Redis (its expiry renews on every poll) and rises only on a
success, which needs a grant first:
- the window and the request capacity are never below one whole request: max(1, n·f).
  A bucket of 0.5 requests, which a limit under ~42/min used to reach after one 429, can
  never grant one;
- the request refill is never below one request per period / (1 - margin), whatever f.
Input tokens cannot stall either: a call needs at most the token capacity at f before it
is let through, and the token refill is at least aimd_floor × its full rate, so a call of
n tokens waits at most (n + the previous call's excess over the burst) /
(aimd_floor × tok_rate) after a pause. tests/llm/test_limiter_progress.py checks both
properties on the real scripts, the window's bound on wire stamps.

Model names are canonical here (pricing.canonical_model): "models/x", an alias and x share
one bucket, and a name the price table does not know is refused with UnknownModel.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiolimiter import AsyncLimiter
from redis.asyncio import Redis

from pipeline.errors import (
    DailyQuotaExhausted,
    OverLimit,
    RateLimited,
    SettingsError,
    UnknownModel,
)
from pipeline.llm.bucket import BucketShape, LimiterTuning, pacific_midnights, pacific_str
from pipeline.llm.counters import LimiterCounters
from pipeline.llm.pricing import canonical_model
from pipeline.llm.renewal import renewing
from pipeline.redis.connection import text
from pipeline.redis.keys import Keys
from pipeline.settings import Settings
from pipeline.words import counted

__all__ = ["BucketShape", "Limiter", "LimiterTuning", "Permit", "Wait", "pacific_midnights"]

_LUA_DIR = Path(__file__).with_name("lua")
DAILY_KINDS = frozenset({"daily", "daily_count"})


@dataclass(frozen=True)
class Permit:
    """The right to send one call now; give it back with `Limiter.release`."""

    model: str
    permit_id: str
    tokens: int  # input tokens debited (an estimate; corrected on release)
    granted_at_ms: float  # Redis TIME
    lease_until_ms: float


@dataclass(frozen=True)
class Wait:
    """Not now: try again after `retry_after_s`. `kind` is for code, `reason` for people."""

    retry_after_s: float
    reason: str
    kind: str
    until_ms: float

    @property
    def daily(self) -> bool:
        return self.kind in DAILY_KINDS




class Limiter:
    """The shared bucket. Safe to use from many coroutines, processes and machines at once.

    `canonical` maps any spelling of a model to its one id (default: the shipped price
    table's, raising UnknownModel for a model it does not know); every key, limit and
    permit uses that id. `clock_offset_ms` shifts every Redis TIME reading the scripts make
    (0 in production): tests and simulations step through time with it instead of sleeping.
    Raises SettingsError when two `[limits."…"]` tables name the same model or one names
    a model the price table does not know.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        settings: Settings,
        *,
        period_s: float | None = None,
        tuning: LimiterTuning | None = None,
        canonical: Callable[[str], str] = canonical_model,
        clock_offset_ms: float = 0.0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.period_s = period_s if period_s is not None else settings.limit_period_s
        self.tuning = tuning or LimiterTuning()
        self.canonical = canonical
        self.clock_offset_ms = clock_offset_ms
        self._limit_tables = _limit_tables(settings, canonical)
        self._pacers: dict[str, AsyncLimiter] = {}
        load = redis.register_script
        self._acquire = load((_LUA_DIR / "bucket.lua").read_text())
        self._release = load((_LUA_DIR / "bucket_release.lua").read_text())
        self._renew = load((_LUA_DIR / "bucket_renew.lua").read_text())
        self._429 = load((_LUA_DIR / "bucket_429.lua").read_text())
        self._ok = load((_LUA_DIR / "bucket_ok.lua").read_text())
        self._sent = load((_LUA_DIR / "window_sent.lua").read_text())
        self.stats = LimiterCounters(redis, keys)  # 429s and waits, for /metrics

    # keys
    def _keys(self, model: str) -> list[str]:
        return [self.keys.bucket(model), self.keys.bucket_leases(model),
                self.keys.bucket_sent(model)]

    def _midnights(self) -> list[int]:
        return pacific_midnights(datetime.now(UTC) + timedelta(milliseconds=self.clock_offset_ms))

    def shape(self, model: str) -> BucketShape:
        """The bucket of `model` (any spelling); raises UnknownModel for an unknown model."""
        return self._shape(self.canonical(model))

    def _shape(self, model: str) -> BucketShape:
        lim = self.settings.limits_for(self._limit_tables.get(model, model))
        assert lim.rpm and lim.tpm and lim.rpd and lim.max_concurrent_calls  # filled by limits_for
        return BucketShape.from_limits(
            lim.rpm, lim.tpm, lim.rpd, lim.max_concurrent_calls, self.period_s, self.tuning
        )

    async def try_acquire(self, model: str, tokens: int) -> Permit | Wait:
        """One atomic attempt: a Permit now, or how long to wait and why.

        Raises UnknownModel for a model the price table does not know, OverLimit for a
        call of more input tokens than the per-period limit."""
        model = self.canonical(model)
        shape = self._shape(model)
        tokens = max(0, int(tokens))
        if tokens > shape.tpm:
            raise OverLimit(
                f"a call of {tokens} input tokens can never fit {model}'s limit of {shape.tpm} "
                f"tokens per {self.period_s:g} s; raise PIPELINE_TPM (or tpm under "
                f'[limits."{model}"] in pipeline.toml) or split the document'
            )
        permit_id = uuid.uuid4().hex
        t = self.tuning
        res = await self._acquire(
            keys=self._keys(model),
            args=[
                repr(shape.req_cap), repr(shape.req_rate_ms), repr(shape.tok_cap),
                repr(shape.tok_rate_ms), shape.rpd, shape.max_concurrent, tokens, permit_id,
                int(t.lease_s * 1000), *self._midnights(),
                int(t.concurrency_poll_s * 1000), t.key_ttl_s * 1000,
                repr(shape.req_floor_ms), repr(self.clock_offset_ms),
                shape.window_n, repr(shape.window_ms), repr(shape.unsent_hold_ms),
            ],
        )
        if int(res[0]) == 1:
            return Permit(model, permit_id, tokens, float(text(res[1])), float(text(res[2])))
        wait_s = int(res[1]) / 1000
        kind = text(res[2])
        until_ms = float(text(res[3]))
        return Wait(wait_s, self._describe(model, kind, until_ms, shape), kind, until_ms)

    def _describe(self, model: str, kind: str, until_ms: float, shape: BucketShape) -> str:
        if kind in DAILY_KINDS:
            used = (f"all {counted(shape.rpd, 'request')} for today used; "
                    if kind == "daily_count" else "")  # fmt: skip
            return f"{model}: {used}daily quota exhausted until {pacific_str(until_ms)}"
        return {
            "paused": f"{model}: paused after a 429 from the provider",
            "window": f"{model}: {counted(shape.window_n, 'request')} already in the provider's "
                      "window",
            "concurrency": f"{model}: {counted(shape.max_concurrent, 'call')} already in flight",
            "requests": f"{model}: requests-per-minute bucket empty",
            "tokens": f"{model}: input-tokens-per-minute bucket empty",
        }.get(kind, f"{model}: {kind}")

    def _pacer(self, model: str) -> AsyncLimiter:
        pacer = self._pacers.get(model)
        if pacer is None:
            pacer = self._pacers[model] = AsyncLimiter(self.tuning.max_polls_per_s, 1.0)
        return pacer

    async def acquire(self, model: str, tokens: int, deadline_s: float | None = None) -> Permit:
        """Wait for a permit. Daily exhaustion raises at once: nothing helps until midnight PT.

        Raises DailyQuotaExhausted, RateLimited (no permit within `deadline_s`), and what
        `try_acquire` raises."""
        model = self.canonical(model)
        loop = asyncio.get_running_loop()
        give_up = None if deadline_s is None else loop.time() + deadline_s
        while True:
            # In-process pacing: many waiting coroutines must not hammer Redis in lockstep.
            await self._pacer(model).acquire()
            got = await self.try_acquire(model, tokens)
            if isinstance(got, Permit):
                return got
            if got.daily:
                raise DailyQuotaExhausted(
                    f"{got.reason}; dispatch for {model} resumes then "
                    f"(or raise PIPELINE_RPD, or choose another model with --model)"
                )
            sleep_s = got.retry_after_s * (1 + random.uniform(0, 0.1)) + random.uniform(0, 0.005)
            if give_up is not None and loop.time() + sleep_s > give_up:
                raise RateLimited(
                    f"no permit for {model} within {deadline_s:g} s ({got.reason}); "
                    "retry later or lower the load on this model"
                )
            await self.stats.limiter_refused(model, got.kind)
            await asyncio.sleep(sleep_s)
            await self.stats.limiter_waited(model, sleep_s)

    async def release(
        self, permit: Permit, actual_input_tokens: int | None = None, *, sent: bool = True
    ) -> bool:
        """Free the concurrency slot and settle the token debit.

        `actual_input_tokens` (usageMetadata.promptTokenCount) replaces the estimate. With
        `sent=False` the call never left this machine, so Google never counted it: the
        request, its tokens and its place in today's count are all given back.
        """
        shape = self._shape(permit.model)
        if sent:
            correction = 0 if actual_input_tokens is None else actual_input_tokens - permit.tokens
        else:
            correction = -permit.tokens
        held = await self._release(
            keys=self._keys(permit.model),
            args=[permit.permit_id, correction, "0" if sent else "1",
                  repr(shape.req_cap), repr(shape.tok_cap), repr(self.clock_offset_ms)],
        )
        return bool(int(held))

    async def on_wire(self, permit: Permit) -> float:
        """The permit's request has just gone out (its body written): the window counts it
        from now (Redis TIME, ms, returned) rather than from its grant. Called by the
        provider's HTTP client (pipeline/llm/wire.py)."""
        res = await self._sent(
            keys=[self.keys.bucket_sent(permit.model)],
            args=[permit.permit_id, repr(self.clock_offset_ms), self.tuning.key_ttl_s * 1000],
        )
        return float(text(res))

    async def renew(self, permit: Permit) -> bool:
        """Extend the lease of a call still running; False if it had already lapsed."""
        res = await self._renew(
            keys=self._keys(permit.model)[1:2],
            args=[permit.permit_id, int(self.tuning.lease_s * 1000), repr(self.clock_offset_ms)],
        )
        return bool(int(res))

    @contextlib.asynccontextmanager
    async def hold(self, permit: Permit) -> AsyncIterator[Permit]:
        """Keep a permit's lease alive while a (possibly minutes-long) call runs."""
        async with renewing(self.tuning.lease_s / 3, lambda: self.renew(permit), "a call permit"):
            yield permit

    async def on_rate_limited(
        self, model: str, retry_delay_s: float | None = None, per_day: bool = False
    ) -> dict[str, Any]:
        """A 429 came back: pause the model for everyone and cut its rate (or stop for the day).

        Returns {"paused_until_ms", "factor", "daily_exhausted_until_ms"} (Redis TIME, ms)."""
        model = self.canonical(model)
        t = self.tuning
        await self.stats.limiter_429(model, per_day)
        res = await self._429(
            keys=self._keys(model)[:1],
            args=[
                -1 if retry_delay_s is None else int(retry_delay_s * 1000),
                "1" if per_day else "0", *self._midnights(), repr(t.aimd_decrease),
                repr(t.aimd_floor), int(t.aimd_cooldown_s * 1000), repr(t.backoff_initial_s),
                repr(t.backoff_max_s), t.key_ttl_s * 1000, repr(self.clock_offset_ms),
            ],
        )
        return {
            "paused_until_ms": float(text(res[0])),
            "factor": float(text(res[1])),
            "daily_exhausted_until_ms": float(text(res[2])),
        }

    async def on_success(self, model: str) -> float:
        """A call went through: creep back toward the configured rate. Returns the factor."""
        model = self.canonical(model)
        res = await self._ok(keys=self._keys(model)[:1], args=[repr(self.tuning.aimd_increase)])
        return float(text(res))

    async def state(self, model: str) -> dict[str, Any]:
        """A snapshot for `pipeline status` and the dashboard (levels refilled to Redis now).

        A bucket under a name the price table does not know (left from before names were
        canonical) is shown under that name rather than failing the whole status."""
        try:
            model = self.canonical(model)
        except UnknownModel:
            pass
        shape = self._shape(model)
        bucket, leases, window = self._keys(model)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.time()
            pipe.hgetall(bucket)
            pipe.zcard(leases)
            pipe.zrange(window, 0, -1, withscores=True)
            now_raw, raw, in_flight, stamps = await pipe.execute()
        now = now_raw[0] * 1000 + now_raw[1] / 1000 + self.clock_offset_ms
        in_window = sum(1 for _, at in stamps if at > now - shape.window_ms)
        h = {text(k): float(text(v)) for k, v in raw.items()}
        f = h.get("f", 1.0)
        dt = max(0.0, now - h["ts"]) if "ts" in h else 0.0
        rq = min(shape.req_capacity(f), h.get("rq", shape.req_cap) + dt * shape.req_rate(f))
        tk = min(shape.tok_capacity(f), h.get("tk", shape.tok_cap) + dt * shape.tok_rate(f))
        per_period = self.period_s * 1000
        lim = self.settings.limits_for(self._limit_tables.get(model, model))

        def when(field: str) -> str | None:
            ms = h.get(field, 0.0)
            return datetime.fromtimestamp(ms / 1000, UTC).isoformat() if ms > now else None

        day_count = int(h.get("dayn", 0)) if h.get("dayend", 0) > now else 0
        return {
            "model": model,
            "period_s": self.period_s,
            "limits": {"rpm": lim.rpm, "tpm": lim.tpm, "rpd": lim.rpd,
                       "max_concurrent_calls": lim.max_concurrent_calls},
            "factor": f,
            "effective_rpm": shape.window_requests(f) * per_period / shape.window_ms,
            "requests_in_window": in_window,
            "effective_tpm": shape.tok_rate(f) * per_period,
            # the smaller of the smoothing bucket and what the window has room for: what may
            # start at once, up to requests_burst (its level when idle); not quota used
            "requests_left": max(0.0, min(rq, shape.window_requests(f) - in_window)),
            "requests_burst": min(shape.req_capacity(f), float(shape.window_requests(f))),
            "tokens_left": tk,
            "tokens_burst": shape.tok_capacity(f),
            "requests_today": day_count,
            "in_flight": int(in_flight),
            "paused_until": when("pause"),
            "daily_exhausted_until": when("dayx"),
        }


def _limit_tables(settings: Settings, canonical: Callable[[str], str]) -> dict[str, str]:
    """Canonical model id -> the key of its own `[limits."…"]` table in the settings."""
    tables: dict[str, str] = {}
    for name in settings.limits:
        try:
            model = canonical(name)
        except UnknownModel as exc:
            raise SettingsError(f'[limits."{name}"] in pipeline.toml: {exc}') from None
        if model in tables:
            raise SettingsError(
                f'[limits."{tables[model]}"] and [limits."{name}"] in pipeline.toml both set '
                f"the limits of {model}; keep one"
            )
        tables[model] = name
    return tables
