"""Keeping the leases of running jobs alive, fenced by the claim's token.

A lease is 2 x the job's expected duration and is renewed every third of it, so a live
worker never loses a job however long it runs (Celery's visibility-timeout ghost), while a
dead worker's job comes back within one lease. Renewals go out in one script call per tick,
on a synchronous connection of their own: they are sent from the liveness thread
(liveness.py), so a task that blocks the event loop cannot stop them.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

import redis as syncredis

from pipeline.queue.job import Job
from pipeline.queue.scripts import LUA_DIR
from pipeline.redis.keys import Keys
from pipeline.redis.scripts import lua_source

log = logging.getLogger("pipeline.lease")

RENEW_CHUNK = 500  # leases per script call


class Lease(Protocol):
    """A claim this worker holds: its job (id, fencing token, lease length) and when the
    lease was last renewed (monotonic seconds). The worker's entry for a running job
    (shutdown.Running) is its lease: one object a running job, not two."""

    job: Job
    renewed_at: float


def _token(lease: Lease) -> str:
    return lease.job.token or ""


def _due(lease: Lease, now: float) -> bool:
    return now - lease.renewed_at >= lease.job.lease_ms / 3000


class LeaseBook:
    """The leases this worker holds, safe to use from the event loop and the liveness thread.

    `hold`/`drop` are called by the worker's loop; `renew_due` by the liveness thread, with
    its own synchronous Redis client. RedisError from Redis propagates (the caller logs it
    and tries again next tick; the lease has two thirds of its length left)."""

    def __init__(self, redis: syncredis.Redis, keys: Keys) -> None:
        self.keys = keys
        self.redis = redis
        self._renew = redis.register_script(lua_source(LUA_DIR, "renew"))
        self._cancelled = redis.register_script(lua_source(LUA_DIR, "cancelled"))
        self._lock = threading.Lock()
        self._leases: dict[str, Lease] = {}

    def hold(self, lease: Lease, renew_now: bool = False) -> None:
        """Renew this lease from now on; with `renew_now`, at the next tick (a handed-off job,
        whose first lease is short: handoff.py)."""
        lease.renewed_at = -1e18 if renew_now else time.monotonic()
        with self._lock:
            self._leases[lease.job.id] = lease

    def drop(self, job_id: str, token: str | None = None) -> None:
        """Stop renewing `job_id`'s lease (with `token`: only the lease of that claim)."""
        with self._lock:
            lease = self._leases.get(job_id)
            if lease is not None and (token is None or _token(lease) == token):
                del self._leases[job_id]

    def snapshot(self) -> list[Lease]:
        with self._lock:
            return list(self._leases.values())

    def cancel_requested(self) -> list[str]:
        """Jobs held here whose cancellation was requested (`cancel` set on the job), read in
        one script call per RENEW_CHUNK jobs: a cancel is noticed within a tick, not at the
        next renewal (a third of a lease that may be minutes long). One call, not a pipeline
        of one HGET per job: the liveness thread builds a command, its packed bytes and a
        reply per running job every tick otherwise (~630 B a job at the peak, tracemalloc)."""
        held = [lease.job.id for lease in self.snapshot()]
        found: list[str] = []
        for start in range(0, len(held), RENEW_CHUNK):
            chunk = held[start : start + RENEW_CHUNK]
            positions = self._cancelled(keys=[self.keys.job(job_id) for job_id in chunk])
            found += [chunk[int(i) - 1] for i in positions]
        return found

    def renew_due(self) -> tuple[list[str], list[str]]:
        """Renew what is due; return (stale job ids, job ids whose cancellation was requested).
        A job dropped while its renewal was on the wire (it just settled) is neither."""
        now = time.monotonic()
        due = [lease for lease in self.snapshot() if _due(lease, now)]
        stale: list[str] = []
        cancel: list[str] = []
        for start in range(0, len(due), RENEW_CHUNK):
            chunk = due[start : start + RENEW_CHUNK]
            keys = [self.keys.active, *(self.keys.job(lease.job.id) for lease in chunk)]
            args: list[str | int] = []
            for lease in chunk:
                args += [lease.job.id, _token(lease), lease.job.lease_ms]
            codes = self._renew(keys=keys, args=args)
            with self._lock:
                for lease, code in zip(chunk, codes, strict=True):
                    if self._leases.get(lease.job.id) is not lease:
                        continue  # settled meanwhile: its renewal's answer means nothing
                    if code == 0:
                        log.warning(
                            "lease of job %s lost (token %s is stale); stopping it",
                            lease.job.id,
                            _token(lease),
                        )
                        stale.append(lease.job.id)
                        del self._leases[lease.job.id]
                    else:
                        lease.renewed_at = now
                        if code == 2:
                            cancel.append(lease.job.id)
        return stale, cancel
