"""Worker processes that make paid calls (`t.ask` in tests.support.llm_tasks) to the Gemini
emulator: their environment, enqueueing a batch of calls, waiting for it, reading the ledger."""

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
from pipeline.queue.job import TERMINAL, Job, State
from pipeline.redis.connection import text
from tests.support.emulator import RunningEmulator
from tests.support.llm_tasks import MODEL, ask
from tests.support.workers import WorkerProcess

IMPORTS = ("tests.support.llm_tasks",)


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
    """Every job terminal, or an AssertionError that shows where they are and the worker logs.

    Polls each job's state field in one pipelined round trip (whole records are read once, at
    the end: reading 150 of them every poll cost seconds of the suite's CPU per test)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if await _all_terminal(client, ids):
            jobs = [await client.get(i) for i in ids]
            if all(j.done for j in jobs):
                return jobs
        dead = [p for p in procs if p.proc.poll() is not None]
        if dead or time.monotonic() > deadline:
            jobs = [await client.get(i) for i in ids]
            states: dict[str, int] = {}
            for j in jobs:
                states[j.state.value] = states.get(j.state.value, 0) + 1
            logs = "\n".join(p.output()[-3000:] for p in procs)
            what = f"{len(dead)} worker(s) exited" if dead else f"not done after {timeout_s}s"
            raise AssertionError(f"jobs {what}: {states}\n{logs}")
        await asyncio.sleep(0.2)


async def _all_terminal(client: QueueClient, ids: Sequence[str]) -> bool:
    async with client.redis.pipeline(transaction=False) as pipe:
        for i in ids:
            pipe.hget(client.keys.job(i), "state")
        states = await pipe.execute()
    return all(s is not None and State(text(s)) in TERMINAL for s in states)


def ledger_calls(database_url: str) -> list[LLMCall]:
    engine = create_ledger_engine(database_url)
    try:
        with Session(engine) as session:
            return list(session.scalars(select(LLMCall).order_by(LLMCall.started_at)))
    finally:
        engine.dispose()

