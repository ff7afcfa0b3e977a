"""Keeping the leases of running jobs alive, fenced by the claim's token.

A lease is 2 x the job's expected duration and is renewed every third of it, so a live
worker never loses a job however long it runs (Celery's visibility-timeout ghost), while a
dead worker's job comes back within one lease. Renewals go out in one script call per tick.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from pipeline.queue.scripts import Scripts
from pipeline.redis.keys import Keys

log = logging.getLogger("pipeline.lease")


@dataclass
class Lease:
    job_id: str
    token: str
    lease_ms: int
    renewed_at: float  # monotonic seconds

    def due(self, now: float) -> bool:
        return now - self.renewed_at >= self.lease_ms / 3000


class LeaseKeeper:
    def __init__(self, redis: Redis, keys: Keys, scripts: Scripts) -> None:
        self.redis, self.keys, self.scripts = redis, keys, scripts
        self.leases: dict[str, Lease] = {}

    def hold(self, job_id: str, token: str, lease_ms: int) -> None:
        self.leases[job_id] = Lease(job_id, token, lease_ms, time.monotonic())

    def drop(self, job_id: str) -> None:
        self.leases.pop(job_id, None)

    async def renew_due(self) -> tuple[list[str], list[str]]:
        """Renew what is due; return (stale job ids, job ids whose cancellation was requested)."""
        now = time.monotonic()
        due = [lease for lease in list(self.leases.values()) if lease.due(now)]
        stale: list[str] = []
        cancel: list[str] = []
        for start in range(0, len(due), 500):
            chunk = due[start : start + 500]
            keys = [self.keys.active, *(self.keys.job(lease.job_id) for lease in chunk)]
            args: list[str | int] = []
            for lease in chunk:
                args += [lease.job_id, lease.token, lease.lease_ms]
            codes = await self.scripts.renew(keys=keys, args=args)
            for lease, code in zip(chunk, codes, strict=True):
                if code == 0:
                    log.warning(
                        "lease of job %s lost (token %s is stale); stopping it",
                        lease.job_id,
                        lease.token,
                    )
                    stale.append(lease.job_id)
                    self.drop(lease.job_id)
                else:
                    lease.renewed_at = now
                    if code == 2:
                        cancel.append(lease.job_id)
        return stale, cancel
