"""The rate limiter's counters, kept in Redis beside the queue's (pipeline/queue/stats.py):
429s per model and kind (minute or day), refusals per reason, and seconds spent waiting.

In Redis, not process memory, for the same reason as the queue's counters: the process that
serves `/metrics` makes no calls, and workers come and go. Fields are `model|what|detail`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.asyncio import Redis

from pipeline.queue.stats import SEP, count
from pipeline.redis.connection import hash_reply
from pipeline.redis.keys import Keys


@dataclass
class LimiterSnapshot:
    """What the limiter counted, for /metrics and the dashboard."""

    limiter_429: dict[tuple[str, str], int] = field(default_factory=dict)  # (model, kind)
    limiter_refusals: dict[tuple[str, str], int] = field(default_factory=dict)  # (model, reason)
    limiter_wait_s: dict[str, float] = field(default_factory=dict)  # model -> seconds


class LimiterCounters:
    """Write side (the limiter, callers) and read side (metrics) of the limiter's counters."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.key = keys.stats("limiter")

    async def limiter_429(self, model: str, per_day: bool) -> None:
        kind = "day" if per_day else "minute"
        await count(self.redis, self.key, {f"{model}{SEP}429{SEP}{kind}": 1})

    async def limiter_refused(self, model: str, reason: str) -> None:
        await count(self.redis, self.key, {f"{model}{SEP}refused{SEP}{reason}": 1})

    async def limiter_waited(self, model: str, seconds: float) -> None:
        if seconds > 0:
            await count(self.redis, self.key, {f"{model}{SEP}wait_s{SEP}": float(seconds)})

    async def read(self) -> LimiterSnapshot:
        snap = LimiterSnapshot()
        for name, value in hash_reply(await self.redis.hgetall(self.key)).items():
            model, what, detail = name.rsplit(SEP, 2)
            if what == "429":
                snap.limiter_429[(model, detail)] = int(float(value))
            elif what == "refused":
                snap.limiter_refusals[(model, detail)] = int(float(value))
            elif what == "wait_s":
                snap.limiter_wait_s[model] = float(value)
        return snap
