"""Tasks for the high-availability scenarios. Each body appends one line to a file outside
Redis when it runs to completion, so a test can count completions that a failover cannot
erase or invent."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pipeline.queue import JobContext, task


def _completed(path: str, ctx: JobContext) -> None:
    with open(path, "a") as fh:  # one short O_APPEND write per line: lines never interleave
        fh.write(f"{ctx.job_id} {os.getpid()} {ctx.attempt}\n")


# expected 5 s: a 10 s lease outlasts a Sentinel failover (about 2-3 s here)
@task(name="ha.step", expected_duration_s=5.0, max_attempts=5, retry_delays_s=(0.2,))
async def step(ctx: JobContext, index: int, log_path: str, seconds: float = 0.2) -> int:
    await asyncio.sleep(seconds)
    _completed(log_path, ctx)
    return index


@task(name="ha.total", expected_duration_s=5.0, max_attempts=5, retry_delays_s=(0.2,))
async def total(ctx: JobContext, results: list[dict[str, Any]], log_path: str) -> int:
    _completed(log_path, ctx)
    return sum(int(r["result"]) for r in results if r["state"] == "complete")
