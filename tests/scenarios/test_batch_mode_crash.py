"""A `pipeline worker` SIGKILLed right after `batches.create` (its job exists at Google's side,
its name recorded nowhere): another worker finds the job by its display name, so there is
exactly one remote batch job, and every document completes from it with no generateContent
call and the ledger equal to the emulator's batch bill. Likewise for a worker SIGKILLed
while it polls a RUNNING job: the next worker polls the recorded job."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import httpx

from pipeline.queue import QueueClient
from pipeline.queue.job import State
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


async def test_a_worker_killed_after_create_leaves_one_batch_job_and_every_result(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    docs = [Upload(f"memo-{i}.pdf", make_pdf(1, f"Memo {i}. Globex signed with Initech."))
            for i in range(3)]  # fmt: skip
    database_url = pipeline_env["PIPELINE_DATABASE_URL"]
    with start_emulator(batch_delay_s=1.0) as emu:
        env = llm_env(emu, database_url, str(tmp_path / "home"), **SETTINGS)
        client = QueueClient(connect_redis(redis_url), settings=load_settings(
            key_prefix=key_prefix, **SETTINGS))  # fmt: skip
        try:
            # A short lease, so the dead worker's jobs run again soon (heartbeats keep live
            # ones): what is tested is where they find their batch job, not how long it takes.
            sub = await submit_uploads(client, docs, mode="batch", expected_duration_s=3)
            doomed = WorkerProcess(redis_url, key_prefix, "--concurrency", "4",
                                   imports=("tasks.analyze", "tests.support.batch_crash"),
                                   **env)  # fmt: skip
            try:
                async def died() -> bool:
                    return doomed.proc.poll() is not None

                await eventually(died, 90, "the worker to die after batches.create")
                assert doomed.proc.returncode == -9, doomed.output()[-3000:]
            finally:
                doomed.close()
            assert emu.stats()["batch"]["jobs_created"] == 1
            heir = WorkerProcess(redis_url, key_prefix, "--concurrency", "4",
                                 imports=("tasks.analyze",), **env)  # fmt: skip
            try:
                jobs = await wait_done(client, sub.job_ids, 120, [heir])
            finally:
                heir.close()
        finally:
            await client.aclose()
        stats = emu.stats()
    assert all(j.state == State.COMPLETE for j in jobs), [j.error for j in jobs]
    assert stats["batch"]["jobs_created"] == 1 and stats["generate_requests"] == 0
    rows = ledger_calls(database_url)
    batch_rows = [r for r in rows if r.mode == "batch"]
    assert len(batch_rows) == 3 and {r.outcome for r in batch_rows} == {"ok"}
    booked = sum((money(r.cost_usd) for r in rows), Decimal(0))
    assert abs(booked - Decimal(stats["batch"]["billed_total"]["cost_usd"])) <= MICRO


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
    docs = [Upload(f"note-{i}.pdf", make_pdf(1, f"Note {i}. Umbrella paid Hooli."))
            for i in range(3)]  # fmt: skip
    database_url = pipeline_env["PIPELINE_DATABASE_URL"]
    # PENDING for the first 3 s, RUNNING until 9 s: room to see it run and kill the poller.
    with start_emulator(batch_delay_s=9.0) as emu:
        env = llm_env(emu, database_url, str(tmp_path / "home"), **SETTINGS)
        client = QueueClient(connect_redis(redis_url), settings=load_settings(
            key_prefix=key_prefix, **SETTINGS))  # fmt: skip
        try:
            sub = await submit_uploads(client, docs, mode="batch", expected_duration_s=3)
            poller = WorkerProcess(redis_url, key_prefix, "--concurrency", "4",
                                   imports=("tasks.analyze",), **env)  # fmt: skip
            try:
                async def running() -> list[str] | None:
                    return _running_batches(emu) or None

                seen = await eventually(running, 90, "the batch job to be RUNNING")
                poller.kill()  # SIGKILL, mid-poll: its jobs are postponed or held by it
                assert poller.proc.returncode == -9, poller.output()[-3000:]
            finally:
                poller.close()
            killed_at = emu.stats()
            heir = WorkerProcess(redis_url, key_prefix, "--concurrency", "4",
                                 imports=("tasks.analyze",), **env)  # fmt: skip
            try:
                jobs = await wait_done(client, sub.job_ids, 120, [heir])
            finally:
                heir.close()
        finally:
            await client.aclose()
        stats = emu.stats()
    assert killed_at["batch"]["jobs_created"] == 1 and killed_at["batch"]["requests"] == 0
    assert all(j.state == State.COMPLETE for j in jobs), [j.error for j in jobs]
    assert all(isinstance(j.result, dict) and j.result["summary"] for j in jobs)
    assert stats["batch"]["jobs_created"] == 1 and stats["generate_requests"] == 0
    assert stats["batch"]["requests"] == 3 and len(seen) == 1
    rows = ledger_calls(database_url)
    batch_rows = [r for r in rows if r.mode == "batch"]
    assert len(batch_rows) == 3 and {r.outcome for r in batch_rows} == {"ok"}
    booked = sum((money(r.cost_usd) for r in rows), Decimal(0))
    assert abs(booked - Decimal(stats["batch"]["billed_total"]["cost_usd"])) <= MICRO
