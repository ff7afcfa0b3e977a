"""The shared bucket's shape: capacities, refill rates and the floors that keep it live.

Split from limiter.py so the arithmetic the Lua scripts run (pipeline/llm/lua/bucket*.lua)
is written once in Python too, where `Limiter.state` and the tests read it. Units: requests
and input tokens; rates per millisecond of Redis TIME; a "period" is the window the limits
are counted over (60 s for real quotas, shrunk in tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

from pipeline.redis.connection import text
from pipeline.redis.keys import Keys

PACIFIC = ZoneInfo("America/Los_Angeles")


@dataclass(frozen=True)
class LimiterTuning:
    """Knobs that are engineering choices, not quotas (those come from Settings)."""

    safety_margin: float = 0.03  # share of each limit never used: jitter between us and Google
    burst_fraction: float = 0.05  # bucket capacity as a share of the (reduced) limit
    # The request window is the period plus this share of it: what separates a request's
    # stamp (after its body left) from the moment the provider counts it (network, the
    # provider's queue). 1.8 s of a minute; at most safety_margin / (1 - safety_margin),
    # so the progress bound of limiter.py still holds.
    window_margin: float = 0.03
    lease_s: float = 120.0  # a concurrency slot comes back this long after a worker dies
    concurrency_poll_s: float = 0.25  # how soon to look again when only the cap blocks
    aimd_decrease: float = 0.5
    aimd_floor: float = 0.1
    aimd_increase: float = 0.02  # per successful call
    aimd_cooldown_s: float = 1.0  # 429s within this are one overload event, one decrease
    backoff_initial_s: float = 1.0  # pause after a 429 without RetryInfo, doubling …
    backoff_max_s: float = 60.0  # … up to this
    max_polls_per_s: float = 50.0  # Redis round trips per model per process while waiting
    key_ttl_s: int = 2 * 86400


# What the rate-limit panels (`pipeline status`, the dashboard) say their "start now" column
# is: the smoothing bucket's level, which is small and full when nothing runs.
BURST_NOTE = ("used: requests sent to the provider and counted against its quota (the offline "
              "analyzer sends none). start now: what may start at once, out of a burst of 5 % "
              "of the limit that refills within the minute; idle, it is full (e.g. 50 of 50 at "
              "1000 rpm), which is not quota used.")


@dataclass(frozen=True)
class BucketShape:
    """Capacities and refill rates (per ms) at full speed, derived from a model's limits.

    At AIMD factor f (0 < f <= 1, lowered by 429s) the bucket runs at
    `req_capacity(f)` / `req_rate(f)` and `tok_capacity(f)` / `tok_rate(f)`; bucket.lua and
    bucket_release.lua compute exactly these. `req_floor_ms` is one request per
    period / (1 - safety margin): the request refill never goes below it, whatever f.
    """

    req_cap: float
    req_rate_ms: float
    tok_cap: float
    tok_rate_ms: float
    rpd: int
    max_concurrent: int
    tpm: int
    req_floor_ms: float
    period_ms: float
    window_n: int = 1  # requests in one window at f = 1 (the provider's limit)
    window_ms: float = 60_000.0  # the window: the period plus window_margin of it
    unsent_hold_ms: float = 120_000.0  # a grant not yet sent counts as sent this much later

    @classmethod
    def from_limits(
        cls, rpm: int, tpm: int, rpd: int, max_concurrent: int, period_s: float, t: LimiterTuning
    ) -> BucketShape:
        """The shape for limits of `rpm` requests and `tpm` input tokens per `period_s`.

        Requests are bounded by the window: `rpm` per period x (1 + window_margin), stamped
        on the wire. Their bucket only smooths bursts (so a run's first minute, and its
        echo a window later, do not arrive all at once): capacity 5 % of the limit, never
        under one, refill at the full limit per period, faster than the window frees
        requests, so it never holds the rate below the window's.

        Input tokens (a bucket alone): capacity C is 5 % of the usable limit
        U = (1 - margin) x limit, never under one whole unit; refill r = (U - C) / period,
        never under (1 - margin) / period, so a small limit still refills one unit per
        period (plus the margin) instead of about one per hundred periods.
        """
        period_ms = period_s * 1000
        keep = 1 - t.safety_margin

        def shape(limit: int) -> tuple[float, float]:
            usable = limit * keep
            cap = max(1.0, float(int(usable * t.burst_fraction)))
            rate = max(usable - cap, keep) / period_ms
            return cap, rate

        req_cap = max(1.0, float(int(rpm * t.burst_fraction)))
        tok_cap, tok_rate = shape(tpm)
        return cls(req_cap, rpm / period_ms, tok_cap, tok_rate, rpd, max_concurrent, tpm,
                   keep / period_ms, period_ms, rpm, period_ms * (1 + t.window_margin),
                   t.lease_s * 1000)  # fmt: skip

    def window_requests(self, f: float) -> int:
        """Requests the window admits at factor f: never under one (bucket.lua's win_n)."""
        return max(1, int(self.window_n * f))

    def req_capacity(self, f: float) -> float:
        """Requests the bucket holds at factor f: never under one, or it could never grant."""
        return max(1.0, self.req_cap * f)

    def req_rate(self, f: float) -> float:
        """Requests refilled per ms at factor f: never under one per period (+ margin)."""
        return max(self.req_rate_ms * f, self.req_floor_ms)

    def tok_capacity(self, f: float) -> float:
        """Input tokens the bucket holds at factor f. A call never needs more than this
        before it is let through (a larger call leaves the bucket in debt instead)."""
        return self.tok_cap * f

    def tok_rate(self, f: float) -> float:
        return self.tok_rate_ms * f


def pacific_midnights(now: datetime | None = None) -> list[int]:
    """Today's, tomorrow's and the next Pacific midnight in epoch ms (DST-aware).

    The script picks the first one after *Redis* time, so a client clock that is off by
    less than a day still resets the daily count at the right moment.
    """
    local = (now or datetime.now(UTC)).astimezone(PACIFIC)
    return [
        int(datetime.combine(local.date() + timedelta(days=i), time(), PACIFIC).timestamp() * 1000)
        for i in range(3)
    ]


def pacific_str(ms: float) -> str:
    """Epoch ms as a Pacific wall-clock time for messages, e.g. "2026-11-21 00:00 PST"."""
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(PACIFIC).strftime("%Y-%m-%d %H:%M %Z")


async def bucket_models(redis: Redis, keys: Keys) -> set[str]:
    """Models that have a bucket in Redis (any worker or caller used them), found by a SCAN."""
    found: set[str] = set()
    async for key in redis.scan_iter(match=keys.bucket("*"), count=1000):
        model = keys.bucket_model(text(key))
        if model:
            found.add(model)
    return found
