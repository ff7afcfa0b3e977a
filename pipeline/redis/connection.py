"""One way to open Redis: a bounded, blocking connection pool, with retries and back-off on
dropped connections.

Blocking: redis-py's default asyncio pool raises "Too many connections" once 100 are in use,
which 10,000 jobs finishing at once will do; a blocking pool makes the burst wait its turn.
Retries: a Redis restart (failover, upgrade, the embedded server coming back from its
append-only file) then costs workers and clients a pause, not a crash.
"""

from __future__ import annotations

from typing import cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError


def connect_redis(
    url: str, *, max_connections: int = 64, retries: int = 20, wait_for_connection_s: float = 60.0
) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=wait_for_connection_s,
        decode_responses=True,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries),
        retry_on_error=[ConnectionError, TimeoutError, BusyLoadingError, ConnectionResetError],
    )
    return Redis(connection_pool=pool)


# Replies come back decoded (decode_responses=True), but redis-py types them loosely; these
# say so once, for the type checker.
def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def texts(values: object) -> list[str]:
    return [text(v) for v in cast(list[object], values)]


def hash_reply(value: object) -> dict[str, str]:
    return {text(k): text(v) for k, v in cast(dict[object, object], value).items()}
