"""Tasks for the queue tests. Imported by in-process workers and by `pipeline worker
--import tests.support.queue_tasks` subprocesses, so state they share with the test lives in
Redis (under the test's key prefix), never in module globals. The test reads and sets that
state with `tkey`, `count` and `set_flag` below.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from typing import Any

from pipeline.errors import Permanent
from pipeline.queue import JobContext, QueueClient, task


def tkey(client: QueueClient, *parts: str) -> str:
    """The Redis key of one piece of state these tasks share with the test."""
    return client.keys.custom("t", *parts)


async def set_flag(client: QueueClient, flag: str) -> None:
    """Release the tasks waiting for `flag` (t.block, t.fail_slowly, t.fail_until_flag)."""
    await client.redis.set(tkey(client, "flag", flag), 1)


async def count(client: QueueClient, what: str, job_id: str) -> int:
    """How many times `job_id` reached `what` ("ran", "started", "completed", "callback")."""
    return int(await client.redis.get(tkey(client, what, job_id)) or 0)


def _k(ctx: JobContext, *parts: str) -> str:
    return tkey(ctx.client, *parts)


async def _mark(ctx: JobContext, what: str) -> None:
    r = ctx.client.redis
    await r.incr(_k(ctx, what, ctx.job_id))
    await r.rpush(_k(ctx, "log"), f"{what}:{ctx.job_id}:{ctx.worker_id}:{ctx.job.attempt}")


async def _wait_flag(ctx: JobContext, flag: str, limit_s: float = 120.0) -> None:
    """Block until the test sets the flag (a Redis key); bounded so nothing hangs forever."""
    r = ctx.client.redis
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not await r.exists(_k(ctx, "flag", flag)):
        if loop.time() > deadline:
            raise TimeoutError(f"flag {flag} never set")
        await asyncio.sleep(0.02)


@task(name="t.echo", expected_duration_s=0.5)
async def echo(ctx: JobContext, value: Any) -> Any:
    await _mark(ctx, "ran")
    return value


@task(name="t.noop", expected_duration_s=0.01)
async def noop(ctx: JobContext) -> None:
    return None


@task(name="t.record", expected_duration_s=0.5)
async def record(ctx: JobContext, label: str) -> str:
    await ctx.client.redis.rpush(_k(ctx, "order"), label)
    return label


@task(name="t.block", expected_duration_s=1.0)
async def block(ctx: JobContext, flag: str, value: Any = None) -> Any:
    """Runs until the test sets `flag`; marks start and completion."""
    await _mark(ctx, "started")
    await _wait_flag(ctx, flag)
    await _mark(ctx, "completed")
    return value if value is not None else ctx.worker_id


@task(name="t.sleep", expected_duration_s=1.0)
async def sleep(ctx: JobContext, seconds: float) -> str:
    await _mark(ctx, "started")
    await asyncio.sleep(seconds)
    await _mark(ctx, "completed")
    return ctx.worker_id


@task(name="t.nap", expected_duration_s=1.0)
async def nap(ctx: JobContext, seconds: float) -> None:
    """Sleeps and touches nothing else: what it holds in its worker is the worker's own."""
    await asyncio.sleep(seconds)


@task(name="t.marks", expected_duration_s=0.1)
async def marks(ctx: JobContext) -> list[str]:
    """Writes into its own job's hints, kwargs-free: a task may treat them as its own."""
    ctx.job.hints["seen"] = True
    return sorted(ctx.job.hints)


@task(name="t.owns", expected_duration_s=0.1)
async def owns(ctx: JobContext, pause_s: float) -> dict[str, Any]:
    """Writes its job's id into every part of its job a worker leaves unmade or shares until
    it is read (kwargs, hints and options left empty, the retry delays every job of the task
    has alike, the rare fields), waits `pause_s` (another job of the task writes meanwhile),
    then returns what it reads back: its own writes only."""
    job, mine = ctx.job, ctx.job_id
    job.kwargs["mine"] = job.hints["mine"] = job.options["mine"] = mine
    job.retry_delays_s.append(len(job.retry_delays_s))
    job.progress, job.group = {"mine": mine}, mine
    await asyncio.sleep(pause_s)
    return {"kwargs": job.kwargs, "hints": job.hints, "options": job.options,
            "retry_delays_s": job.retry_delays_s, "progress": job.progress, "group": job.group,
            "error": job.error}  # fmt: skip


SEEN: contextvars.ContextVar[str] = contextvars.ContextVar("t.seen", default="unset")


@task(name="t.context_var", expected_duration_s=0.1)
async def context_var(ctx: JobContext, pause_s: float) -> list[str]:
    """Reads a context variable, sets it to its job's id, waits `pause_s` (other jobs run and
    set it meanwhile) and reads it again: [what it found, what it finds after]."""
    found = SEEN.get()
    SEEN.set(ctx.job_id)
    await asyncio.sleep(pause_s)
    return [found, SEEN.get()]


@task(name="t.sized", expected_duration_s=0.1)
async def sized(ctx: JobContext, n: int) -> str:
    """A result of `n` characters from an argument of a few bytes."""
    return "x" * n


@task(name="t.lengths", expected_duration_s=0.1)
async def lengths(ctx: JobContext, results: list[dict[str, Any]]) -> list[int]:
    """A chord callback that keeps only the lengths of its group's results."""
    return [len(r.get("result") or "") for r in results]


@task(name="t.flaky", expected_duration_s=0.5, max_attempts=3, retry_delays_s=(0.05,))
async def flaky(ctx: JobContext, fail_times: int, value: Any = "ok") -> Any:
    await _mark(ctx, "ran")
    if ctx.attempt <= fail_times:
        raise RuntimeError(f"planned failure {ctx.attempt}")
    return value


@task(name="t.permanent", expected_duration_s=0.5)
async def permanent(ctx: JobContext) -> None:
    await _mark(ctx, "ran")
    raise Permanent("this input can never work")


class Unsayable(Exception):
    """An exception whose message cannot be read: its __str__ raises."""

    def __str__(self) -> str:
        raise ValueError("no message")


@task(name="t.unsayable", expected_duration_s=0.1, max_attempts=1)
async def unsayable(ctx: JobContext) -> None:
    raise Unsayable()


class Unreadable(Exception):
    """An exception no isinstance() check can read: its __class__ raises, so sorting it
    (outcome.from_error) raises too."""

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        raise ValueError("no class")


@task(name="t.unreadable", expected_duration_s=0.1, max_attempts=1)
async def unreadable(ctx: JobContext) -> None:
    raise Unreadable()


@task(name="t.slow_timeout", expected_duration_s=0.1, timeout_s=0.2, max_attempts=1)
async def slow_timeout(ctx: JobContext) -> None:
    await asyncio.sleep(30)


@task(name="t.collect", expected_duration_s=0.5)
async def collect(ctx: JobContext, results: list[dict[str, Any]], tag: str) -> dict[str, Any]:
    await _mark(ctx, "callback")
    return {
        "tag": tag,
        "states": [r["state"] for r in results],
        "results": [r["result"] for r in results],
    }


@task(name="t.cpu", expected_duration_s=0.5)
async def cpu(ctx: JobContext, n: int) -> list[Any]:
    return [await ctx.run_cpu("tests.support.queue_tasks:child_info", n) for _ in range(3)]


def child_info(n: int) -> dict[str, int]:
    return {"pid": os.getpid(), "square": n * n}


@task(name="t.postponed", expected_duration_s=0.5, max_attempts=1)
async def postponed(ctx: JobContext, times: int) -> int:
    """Waits for a 'window' `times` times without spending its single attempt."""
    from pipeline.errors import Retry

    runs = await ctx.client.redis.incr(_k(ctx, "runs", ctx.job_id))
    if runs <= times:
        raise Retry("quota window closed", delay_s=0.05, count_attempt=False)
    return runs


def die_once(marker: str) -> str:
    """Kills its own pool process the first time (as an OOM kill would), then answers."""
    import pathlib
    import signal

    path = pathlib.Path(marker)
    if not path.exists():
        path.write_text("died")
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


@task(name="t.cpu_crash", expected_duration_s=1.0, max_attempts=2, retry_delays_s=(0.05,))
async def cpu_crash(ctx: JobContext, marker: str) -> str:
    return str(await ctx.run_cpu("tests.support.queue_tasks:die_once", marker))


@task(name="t.fail_until_flag", expected_duration_s=0.5, max_attempts=1)
async def fail_until_flag(ctx: JobContext, flag: str) -> str:
    """Fails for good until the test sets `flag`; then succeeds (a requeued chord member)."""
    if not await ctx.client.redis.exists(_k(ctx, "flag", flag)):
        raise Permanent("not yet")
    return "fixed"


@task(name="t.fail_slowly", expected_duration_s=1.0, max_attempts=5, retry_delays_s=(0.05,))
async def fail_slowly(ctx: JobContext, flag: str) -> None:
    """Starts, waits for the test's flag, then fails (and would be retried)."""
    await _mark(ctx, "started")
    await _wait_flag(ctx, flag)
    raise RuntimeError("failing after the cancel request")
