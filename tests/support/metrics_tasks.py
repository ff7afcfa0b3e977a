"""Tasks for the metrics and dashboard tests, imported by in-process and subprocess workers.

`m.stall` makes a fenced completion happen for real: its first attempt blocks (a synchronous
wait) while the test stops its whole worker process (SIGSTOP), so that worker can neither
renew its lease nor notice losing it. Another worker reclaims and
finishes the job; when the stalled worker wakes, its completion carries a stale token and
is refused. The attempt says when it is blocked (key `blocking`, written from the blocked
section): stopped before that, it may still be at its one await, where the lost-lease halt
cancels it on waking, leaving no completion to refuse. State shared with the test lives in
Redis under the test's prefix.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from pipeline.queue import JobContext, task


def _k(ctx: JobContext, *parts: str) -> str:
    return ctx.client.keys.custom("m", *parts)


@task(name="m.stall", expected_duration_s=0.2, max_attempts=3)
async def stall(ctx: JobContext, flag: str, limit_s: float = 60.0) -> str:
    await ctx.client.redis.incr(_k(ctx, "started", str(ctx.attempt)))
    if ctx.attempt > 1:
        return f"attempt {ctx.attempt}"
    url = ctx.client.settings.redis_url
    assert url, "m.stall needs PIPELINE_REDIS_URL"
    sync = redis.Redis.from_url(url)
    try:
        # No await from here to the return: once this key is in Redis the loop is blocked, and
        # the body returns its value on waking before any halt can run. (`started` is not that
        # signal: the worker may not have read INCR's reply yet, so the body is still at the
        # await, where a lost-lease halt posted on waking cancels it: settled `lost`.)
        sync.set(_k(ctx, "blocking", str(ctx.attempt)), 1)
        deadline = time.monotonic() + limit_s
        while not sync.exists(_k(ctx, "flag", flag)) and time.monotonic() < deadline:
            time.sleep(0.02)  # noqa: ASYNC251 -- blocks the loop on purpose: no renewals
    finally:
        sync.close()
    return "stalled attempt"


@task(name="m.work", expected_duration_s=0.2)
async def work(ctx: JobContext, value: Any, pause_s: float = 0.0) -> Any:
    if pause_s:
        import asyncio

        await asyncio.sleep(pause_s)
    return value


@task(name="m.broken", expected_duration_s=0.2, max_attempts=2, retry_delays_s=(0.05,))
async def broken(ctx: JobContext, message: str) -> None:
    raise RuntimeError(message)
