"""One way to open Redis: retries with back-off on dropped connections.

A Redis restart (failover, upgrade, the embedded server coming back from its append-only
file) then costs workers and clients a pause, not a crash.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError


def connect_redis(url: str, *, retries: int = 20) -> Redis:
    return Redis.from_url(
        url,
        decode_responses=True,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries),
        retry_on_error=[ConnectionError, TimeoutError, BusyLoadingError, ConnectionResetError],
    )
