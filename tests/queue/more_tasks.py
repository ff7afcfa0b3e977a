"""Tasks for the registry and liveness tests, imported by `pipeline worker --import
tests.queue.more_tasks` subprocesses and by in-process workers. State shared with the test
lives in Redis under the test's prefix (or, for plain functions, in the return value)."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis

from pipeline.queue import JobContext, task


def _k(ctx: JobContext, *parts: str) -> str:
    return ctx.client.keys.custom("t", *parts)


@task(name="t.special", queue="special", expected_duration_s=3, timeout_s=5, max_attempts=1,
      retry_delays_s=(1, 2), priority="high")  # fmt: skip
async def special(ctx: JobContext, value: Any) -> dict[str, Any]:
    """Declared on its own queue with options far from the defaults (case 06)."""
    return {"value": value, "timeout_s": ctx.job.timeout_s, "lease_ms": ctx.job.lease_ms}


@task(name="t.block_loop", expected_duration_s=1.0, max_attempts=3)
async def block_loop(ctx: JobContext, seconds: float) -> str:
    """Blocks the worker's event loop (a synchronous call inside an async task, case 01 B)."""
    r = ctx.client.redis
    await r.incr(_k(ctx, "started", ctx.job_id))
    time.sleep(seconds)  # noqa: ASYNC251 - blocking the loop is what this task is for
    await r.incr(_k(ctx, "completed", ctx.job_id))
    return f"{ctx.worker_id}:{ctx.attempt}"


@task(name="t.plain_sleep", expected_duration_s=0.5)
def plain_sleep(ctx: JobContext, seconds: float) -> dict[str, Any]:
    """A plain function: the worker runs it in a thread, off the event loop."""
    time.sleep(seconds)
    return {"thread": threading.current_thread().name, "job": ctx.job_id}


@task(name="t.plain_waits", expected_duration_s=0.2, timeout_s=2.0, max_attempts=2)
def plain_waits(ctx: JobContext, redis_url: str, limit_s: float = 30.0) -> str:
    """A plain function that counts its runs (`started`) and returns once the test sets its
    flag (`flag`, both keys by job id), or after `limit_s`."""
    r = redis.Redis.from_url(redis_url)
    try:
        r.incr(_k(ctx, "started", ctx.job_id))
        deadline = time.monotonic() + limit_s
        while not r.exists(_k(ctx, "flag", ctx.job_id)) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        r.close()
    return f"returned by attempt {ctx.attempt}"
