"""The queue's operational counters kept in Redis: lease expiries, fenced completions, job
durations by task, and jobs settled by outcome. (The rate limiter keeps its own 429 and wait
counters the same way, in pipeline/llm/counters.py.)

Why Redis and not process memory: workers are killed and restarted (that is the point of
leases), and the process that serves `/metrics` runs no jobs. Counters that lived in a
worker would reset on every restart and be invisible to the API; in Redis they outlive both
and every scrape reads the same numbers. Each event is one HINCRBY on a hash per kind of
event, so counting costs one round trip and never holds up a job: a failure to count is
logged and forgotten, because a lost count must never become a lost job.

Fields join their labels with `|`; labels are queue, task and model names, which never
contain it in practice, and the reader splits from the right so a task name with one still
reads back (only the last parts are fixed-form).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from pipeline.redis.connection import text
from pipeline.redis.keys import Keys

log = logging.getLogger("pipeline.stats")

# Job durations span a no-op (ms) to a long document (many minutes): buckets in seconds.
DURATION_BUCKETS_S: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, math.inf,
)  # fmt: skip
SEP = "|"


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


@dataclass
class Histogram:
    """Cumulative bucket counts (as Prometheus wants them), the sum and the count."""

    buckets: dict[str, int] = field(default_factory=dict)  # le -> cumulative count
    sum_s: float = 0.0
    count: int = 0


@dataclass
class StatsSnapshot:
    lease_expired: dict[tuple[str, str], int] = field(default_factory=dict)  # (queue, outcome)
    fenced: dict[tuple[str, str], int] = field(default_factory=dict)  # (queue, task)
    settled: dict[tuple[str, str, str], int] = field(default_factory=dict)  # queue, task, outcome
    durations: dict[str, Histogram] = field(default_factory=dict)  # task -> histogram


class Stats:
    """Write side (workers, sweeper, limiter) and read side (metrics, dashboard) in one place,
    so the field layout is known to one module only."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    def _key(self, kind: str) -> str:
        return self.keys.stats(kind)

    async def _incr(self, kind: str, fields: dict[str, float]) -> None:
        await count(self.redis, self._key(kind), fields)

    # -- write -----------------------------------------------------------------------------
    async def lease_expired(self, queue: str, outcome: str) -> None:
        await self._incr("lease_expired", {f"{queue}{SEP}{outcome}": 1})

    async def fenced(self, queue: str, task: str) -> None:
        await self._incr("fenced", {f"{queue}{SEP}{task}": 1})

    def settle_counters(
        self, queue: str, task: str, outcome: str, duration_s: float
    ) -> tuple[list[str], list[str | float]]:
        """KEYS and ARGV for finish.lua to count a settled attempt in the same atomic step
        (no extra round trip per job): outcome count, the duration histogram, and the
        outcome count finish.lua makes instead when the attempt's job was cancelled while it
        ran (a retry that will not come back is counted `cancelled`)."""
        duration_s = max(0.0, duration_s)
        bound = next(b for b in DURATION_BUCKETS_S if duration_s <= b)
        keys = [self._key("settled"), self._key("durations")]
        args: list[str | float] = [
            f"{queue}{SEP}{task}{SEP}{outcome}",
            f"{task}{SEP}{_le(bound)}",
            f"{task}{SEP}count",
            f"{task}{SEP}sum",
            duration_s,
        ]
        return keys, args

    @staticmethod
    def cancelled_field(queue: str, task: str) -> str:
        """finish.lua's settled-count field for an attempt it settles as `cancelled`."""
        return f"{queue}{SEP}{task}{SEP}cancelled"

    # -- read ------------------------------------------------------------------------------
    async def read(self) -> StatsSnapshot:
        async with self.redis.pipeline(transaction=False) as pipe:
            for kind in ("lease_expired", "fenced", "settled", "durations"):
                pipe.hgetall(self._key(kind))
            expired, fenced, settled, durations = await pipe.execute()
        snap = StatsSnapshot()
        snap.lease_expired = _split(expired, 2)
        snap.fenced = _split(fenced, 2)
        snap.settled = _split(settled, 3)
        snap.durations = _histograms(durations)
        return snap


async def count(redis: Redis, key: str, fields: dict[str, float]) -> None:
    """Add to counter fields of one hash in one round trip; a failure is logged and forgotten
    (a lost count must never become a lost job)."""
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for name, amount in fields.items():
                if isinstance(amount, int):
                    pipe.hincrby(key, name, amount)
                else:
                    pipe.hincrbyfloat(key, name, amount)
            await pipe.execute()
    except (RedisError, OSError) as exc:
        log.debug("could not count %s: %s", key, exc)


def _split(raw: dict[Any, Any], parts: int) -> dict[Any, int]:
    out: dict[Any, int] = {}
    for name, value in raw.items():
        labels = text(name).rsplit(SEP, parts - 1)
        if len(labels) == parts:
            out[tuple(labels)] = int(text(value))
    return out


def _histograms(raw: dict[Any, Any]) -> dict[str, Histogram]:
    per_task: dict[str, dict[str, str]] = defaultdict(dict)
    for name, value in raw.items():
        task, part = text(name).rsplit(SEP, 1)
        per_task[task][part] = text(value)
    out: dict[str, Histogram] = {}
    for task, parts in per_task.items():
        h = Histogram(sum_s=float(parts.get("sum", 0)), count=int(parts.get("count", 0)))
        running = 0
        for bound in DURATION_BUCKETS_S:
            running += int(parts.get(_le(bound), 0))
            h.buckets[_le(bound)] = running
        out[task] = h
    return out
