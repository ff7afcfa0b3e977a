"""Helpers for the multi-process LLM tests: worker processes wired to the emulator, waiting
for a batch of jobs, reading the ledger, and measuring what the emulator saw."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.ledger.db import create_ledger_engine
from pipeline.ledger.models import LLMCall
from pipeline.queue import JobOptions, QueueClient
from pipeline.queue.job import Job
from tests.llm_helpers import RunningEmulator
from tests.llm_tasks import MODEL, ask
from tests.queue_helpers import WorkerProcess

IMPORTS = ("tests.llm_tasks",)


def llm_env(emu: RunningEmulator, database_url: str, home: str, **settings: Any) -> dict[str, str]:
    """Environment of a worker that calls the emulator; `settings` become PIPELINE_<NAME>."""
    env = {
        **emu.env,
        "GOOGLE_API_KEY": "",  # it would win over GEMINI_API_KEY in the SDK
        "PIPELINE_HOME": home,
        "PIPELINE_DATABASE_URL": database_url,
    }
    env.update({f"PIPELINE_{k.upper()}": str(v) for k, v in settings.items()})
    return env


@contextlib.contextmanager
def workers(
    redis_url: str, prefix: str, env: dict[str, str], count: int, concurrency: int = 50
) -> Iterator[list[WorkerProcess]]:
    procs = [
        WorkerProcess(
            redis_url, prefix, "--concurrency", str(concurrency), "--log-level", "WARNING",
            imports=IMPORTS, **env,
        )
        for _ in range(count)
    ]
    try:
        yield procs
    finally:
        for p in procs:
            p.close()


async def enqueue_asks(
    client: QueueClient,
    count: int,
    *,
    batch: str,
    tokens: int = 20,
    tag: str = "q",
    **kwargs: Any,
) -> list[str]:
    """`count` distinct prompts (so the call store never answers one from another)."""
    ids = []
    for i in range(count):
        opts = JobOptions(batch=batch, hints={"model": MODEL, "tokens": tokens})
        prompt = f"{tag} {i}: summarise the plan for document {i} in one line."
        handle = await client.enqueue(ask, prompt, _options=opts, **kwargs)
        ids.append(handle.id)
    return ids


async def wait_done(
    client: QueueClient, ids: Sequence[str], timeout_s: float, procs: Sequence[WorkerProcess] = ()
) -> list[Job]:
    """Every job terminal, or an AssertionError that shows where they are and the worker logs."""
    deadline = time.monotonic() + timeout_s
    while True:
        jobs = [await client.get(i) for i in ids]
        if all(j.done for j in jobs):
            return jobs
        dead = [p for p in procs if p.proc.poll() is not None]
        if dead or time.monotonic() > deadline:
            states: dict[str, int] = {}
            for j in jobs:
                states[j.state.value] = states.get(j.state.value, 0) + 1
            logs = "\n".join(p.output()[-3000:] for p in procs)
            what = f"{len(dead)} worker(s) exited" if dead else f"not done after {timeout_s}s"
            raise AssertionError(f"jobs {what}: {states}\n{logs}")
        await asyncio.sleep(0.2)


def ledger_calls(database_url: str) -> list[LLMCall]:
    engine = create_ledger_engine(database_url)
    try:
        with Session(engine) as session:
            return list(session.scalars(select(LLMCall).order_by(LLMCall.started_at)))
    finally:
        engine.dispose()


def rate_per_s(stamps: Sequence[float]) -> float:
    """Requests per second over the busy interval: from the first arrival to the last."""
    ordered = sorted(stamps)
    return (len(ordered) - 1) / (ordered[-1] - ordered[0])


def max_in_window(stamps: Sequence[float], window_s: float) -> int:
    """The most arrivals in any window of `window_s` (the emulator's own sliding window)."""
    ordered = sorted(stamps)
    best, lo = 0, 0
    for hi, t in enumerate(ordered):
        while ordered[lo] <= t - window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best
