"""A `pipeline worker` SIGKILLed right after `batches.create` (its job exists at Google's side,
its name recorded nowhere): another worker finds the job by its display name, so there is
exactly one remote batch job, and every document completes from it with no generateContent
call and the ledger equal to the emulator's batch bill. Likewise for a worker SIGKILLed
while it polls a RUNNING job: the next worker polls the recorded job."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from pipeline.queue import QueueClient
from pipeline.queue.job import Job, State
from pipeline.redis.connection import connect_redis
from pipeline.settings import load_settings
from tasks.submission import Upload, submit_uploads
from tests.support.emulator import RunningEmulator, start_emulator
from tests.support.paid_rig import MICRO, money
from tests.support.paid_workers import ledger_calls, llm_env, wait_done
from tests.support.pdfs import make_pdf
from tests.support.waiting import eventually
from tests.support.workers import WorkerProcess

SETTINGS = {"batch_poll_s": 0.3, "batch_poll_max_s": 1.0, "batch_create_lock_s": 2.0}


async def _kill_then_finish(
    emu: RunningEmulator, database_url: str, redis_url: str, key_prefix: str, home: Path,
    docs: list[Upload], imports: tuple[str, ...],
    killed: Callable[[WorkerProcess], Awaitable[bool]], what: str,
) -> tuple[list[Job], dict[str, Any]]:  # fmt: skip
    """Submit `docs` in batch mode to a worker importing `imports`; once `killed(worker)`
    holds it must be dead by SIGKILL (the check may kill it); then a fresh worker finishes
    every document. Returns the jobs and the emulator's stats at the kill."""
    env = llm_env(emu, database_url, str(home), **SETTINGS)
    client = QueueClient(connect_redis(redis_url), settings=load_settings(
        key_prefix=key_prefix, **SETTINGS))  # fmt: skip
    try:
        # A short lease, so the dead worker's jobs run again soon (heartbeats keep live
        # ones): what is tested is where they find their batch job, not how long it takes.
        sub = await submit_uploads(client, docs, mode="batch", expected_duration_s=3)
        doomed = WorkerProcess(redis_url, key_prefix, "--concurrency", "4", imports=imports,
                               **env)  # fmt: skip
        try:
            async def dead() -> bool:
                return await killed(doomed)

            await eventually(dead, 90, what)
            assert doomed.proc.wait(10) == -9, doomed.output()[-3000:]
        finally:
            doomed.close()
        at_kill = emu.stats()
        heir = WorkerProcess(redis_url, key_prefix, "--concurrency", "4",
                             imports=("tasks.analyze",), **env)  # fmt: skip
        try:
            jobs = await wait_done(client, sub.job_ids, 120, [heir])
        finally:
            heir.close()
    finally:
        await client.aclose()
    return jobs, at_kill


def _assert_one_job_every_result(jobs: list[Job], stats: dict[str, Any], database_url: str) -> None:
    assert all(j.state == State.COMPLETE for j in jobs), [j.error for j in jobs]
    assert all(isinstance(j.result, dict) and j.result["summary"] for j in jobs)
    assert stats["batch"]["jobs_created"] == 1 and stats["generate_requests"] == 0
    assert stats["batch"]["requests"] == len(jobs)
    rows = ledger_calls(database_url)
    batch_rows = [r for r in rows if r.mode == "batch"]
    assert len(batch_rows) == len(jobs) and {r.outcome for r in batch_rows} == {"ok"}
    # Each request is booked to its own document's job, whichever job submitted or
    # collected the group (and whichever died doing so).
    own = {str(j.args[0]["sha256"]): j.id for j in jobs}
    assert {str(r.document_id): r.job_id for r in batch_rows} == own
    booked = sum((money(r.cost_usd) for r in rows), Decimal(0))
    assert abs(booked - Decimal(stats["batch"]["billed_total"]["cost_usd"])) <= MICRO


def _docs(text: str) -> list[Upload]:
    return [Upload(f"doc-{i}.pdf", make_pdf(1, f"{text} {i}.")) for i in range(3)]


async def _died(worker: WorkerProcess) -> bool:
    """The worker a crash hook (tests/support/batch_crash.py, batch_collect_crash.py) killed."""
    return worker.proc.poll() is not None


async def test_a_worker_killed_after_create_leaves_one_batch_job_and_every_result(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    database_url = pipeline_env["PIPELINE_DATABASE_URL"]

    with start_emulator(batch_delay_s=1.0) as emu:
        jobs, at_kill = await _kill_then_finish(
            emu, database_url, redis_url, key_prefix, tmp_path / "home",
            _docs("Memo. Globex signed with Initech."),
            ("tasks.analyze", "tests.support.batch_crash"), _died,
            "the worker to die after batches.create")  # fmt: skip
        stats = emu.stats()
    assert at_kill["batch"]["jobs_created"] == 1
    _assert_one_job_every_result(jobs, stats, database_url)


def _running_batches(emu: RunningEmulator) -> list[str]:
    """Names of the emulator's batch jobs now RUNNING (a look that runs no answers)."""
    listed = httpx.get(f"{emu.base_url}/v1beta/batches",
                       headers={"x-goog-api-key": emu.api_key}, timeout=10)  # fmt: skip
    listed.raise_for_status()
    return [op["name"] for op in listed.json().get("operations", [])
            if op["metadata"]["state"] == "BATCH_STATE_RUNNING"]  # fmt: skip


async def test_a_worker_killed_while_polling_leaves_one_batch_job_and_every_result(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """The batch job exists and is recorded; the worker polling it is SIGKILLed while it
    runs. Another worker carries on polling the same job: no second batch, every result."""
    database_url = pipeline_env["PIPELINE_DATABASE_URL"]
    seen: list[str] = []

    async def killed_while_running(worker: WorkerProcess) -> bool:
        seen[:] = _running_batches(emu)
        if seen:
            worker.kill()  # SIGKILL, mid-poll: its jobs are postponed or held by it
        return bool(seen)

    # PENDING for the first 3 s, RUNNING until 9 s: room to see it run and kill the poller.
    with start_emulator(batch_delay_s=9.0) as emu:
        jobs, at_kill = await _kill_then_finish(
            emu, database_url, redis_url, key_prefix, tmp_path / "home",
            _docs("Note. Umbrella paid Hooli."), ("tasks.analyze",), killed_while_running,
            "the batch job to be RUNNING")  # fmt: skip
        stats = emu.stats()
    assert len(seen) == 1
    assert at_kill["batch"]["jobs_created"] == 1 and at_kill["batch"]["requests"] == 0
    _assert_one_job_every_result(jobs, stats, database_url)


async def test_a_worker_killed_while_collecting_leaves_every_request_booked_to_its_own_job(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """The worker collecting the finished batch job is SIGKILLed after booking its first
    request (the others still `started`, the group not marked booked): another worker
    collects it again, so every request ends booked once, at the bill, each under its own
    document's job, and the group's budget holds are all settled."""
    from pipeline.ledger.budget import Budget

    database_url = pipeline_env["PIPELINE_DATABASE_URL"]

    with start_emulator(batch_delay_s=1.0) as emu:
        jobs, at_kill = await _kill_then_finish(
            emu, database_url, redis_url, key_prefix, tmp_path / "home",
            _docs("Receipt. Initech paid Globex."),
            ("tasks.analyze", "tests.support.batch_collect_crash"), _died,
            "the worker to die while collecting")  # fmt: skip
        stats = emu.stats()
    assert at_kill["batch"]["jobs_created"] == 1
    _assert_one_job_every_result(jobs, stats, database_url)
    client = QueueClient(connect_redis(redis_url), settings=load_settings(
        key_prefix=key_prefix, **SETTINGS))  # fmt: skip
    try:
        budget = Budget(client.redis, client.keys, client.settings)
        status = await budget.status(str(jobs[0].batch))
    finally:
        await client.aclose()
    booked = sum((money(r.cost_usd) for r in ledger_calls(database_url)), Decimal(0))
    assert status["batch"].reserved_usd == 0
    assert abs(status["batch"].spent_usd - booked) <= MICRO
