"""Tasks the benchmarks run in real `pipeline worker` processes."""

from __future__ import annotations

import asyncio
import time

from pipeline.queue import JobContext, task


@task(name="bench.noop", expected_duration_s=0.01, max_attempts=1)
async def noop(ctx: JobContext) -> None:
    return None


@task(name="bench.stamp", expected_duration_s=0.01, max_attempts=1)
async def stamp(ctx: JobContext) -> float:
    """Record when the job started, for enqueue->start latency."""
    return time.time()


@task(name="bench.sleep", expected_duration_s=20, max_attempts=1)
async def sleep(ctx: JobContext, seconds: float) -> None:
    await asyncio.sleep(seconds)
