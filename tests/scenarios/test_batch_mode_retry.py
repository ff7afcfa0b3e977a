"""A retry keeps the mode its documents were submitted with: a Batch Mode batch that ended
over budget, its budget raised, retried with `pipeline retry --over-budget`, is answered by
a Gemini batch job at the batch rate, not interactively at twice the price, and `status`
still says Batch Mode; a cancelled one retried through `POST /batches/{id}/retry` the same;
and one whose deadline's fallback time has passed is retried interactively, saying so. A
real worker (tests/support/paid_rig.py), Redis, the SQLite ledger, the real google-genai
client and the emulator; the CLI in subprocesses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pipeline.llm.batch_group import recorded
from pipeline.llm.pricing import PriceTable
from pipeline.llm.provider import Usage
from pipeline.queue.job import State
from tasks.submission import submit_uploads
from tests.support.api import api_client, api_settings
from tests.support.cli import run_cli
from tests.support.emulator import RunningEmulator, start_emulator
from tests.support.paid_rig import (
    FAST_BATCH_POLL,
    MICRO,
    Rig,
    memo_uploads,
    money,
    running_pipeline,
)
from tests.support.waiting import eventually


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    with start_emulator(batch_delay_s=1.0) as running:
        yield running


async def _cli(env: dict[str, str], *args: str) -> Any:
    # In a thread: the rig's worker shares this event loop and must keep running meanwhile.
    return await asyncio.to_thread(run_cli, env, *args)


def _assert_answered_in_batch_mode(rows: list[Any], stats: dict[str, Any], n: int) -> None:
    """The `n` documents' answers came from one batch job, booked at the batch rate (half the
    interactive price of the same tokens), and nothing was sent interactively."""
    assert stats["generate_requests"] == 0, stats
    batch_rows = [r for r in rows if r.mode == "batch" and r.outcome == "ok"]
    assert len(batch_rows) == n, [(r.mode, r.outcome) for r in rows]
    assert all(r.outcome == "from_store" and r.cost_usd == 0 for r in rows
               if r.mode != "batch"), [(r.mode, r.outcome, r.cost_usd) for r in rows]  # fmt: skip
    booked = sum((money(r.cost_usd) for r in batch_rows), Decimal(0))
    assert booked > 0
    prices = PriceTable.load()
    interactive = sum((prices.cost(r.model_version or r.model,
                                   Usage(input_tokens=r.input_tokens,
                                         output_tokens=r.output_tokens,
                                         thinking_tokens=r.thinking_tokens), r.started_at)
                       for r in batch_rows), Decimal(0))  # fmt: skip
    assert abs(interactive / 2 - booked) <= MICRO, (interactive, booked)


async def _finished(rig: Rig, job_ids: list[str]) -> list[Any]:
    return [await rig.finished(j, timeout_s=90) for j in job_ids]


async def test_a_batch_mode_batch_over_budget_is_retried_in_batch_mode(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, emu: RunningEmulator,
) -> None:  # fmt: skip
    from pipeline.ledger.budget import Budget

    env = {**pipeline_env, **emu.env, "GOOGLE_API_KEY": ""}
    docs = memo_uploads(3)
    async with running_pipeline(emu, redis_url, key_prefix, provider_name="emulator",
                                **FAST_BATCH_POLL) as rig:  # fmt: skip
        from datetime import UTC, datetime

        from tasks.plan import least_call_usd

        floor = least_call_usd(PriceTable.load(), rig.client.settings.model, datetime.now(UTC),
                               batch=True)  # fmt: skip
        low = (floor * Decimal("2.5")).quantize(Decimal("0.000000001"))  # not 3 requests
        sub = await submit_uploads(rig.client, docs, mode="batch", budget_usd=low,
                                   services=rig.services)  # fmt: skip
        assert sub.batch_id is not None
        # What the submit said came true (tasks/budget_warning.group_words).
        assert any("all 3 documents will end over budget" in w for w in sub.warnings), sub
        jobs = await _finished(rig, sub.job_ids)
        assert {j.state for j in jobs} == {State.OVER_BUDGET}, [j.error for j in jobs]
        assert emu.stats()["batch"]["jobs_created"] == 0
        # The product's advice: the amount that admits the group the budget refused.
        budget = Budget(rig.client.redis, rig.client.keys, rig.client.settings)
        group_usd = max((await budget.refused(sub.batch_id, list(sub.job_ids))).values())
        raised = await _cli(env, "budget", sub.batch_id[:12], "--set", str(group_usd))
        assert raised.returncode == 0, raised.stdout + raised.stderr

        retry = await _cli(env, "retry", sub.batch_id[:12], "--over-budget", "--json")
        assert retry.returncode == 0, retry.stdout + retry.stderr
        retried = json.loads(retry.stdout.splitlines()[0])["documents"]
        assert {r["status"] for r in retried} == {"queued"}, retried
        jobs = await _finished(rig, [r["job_id"] for r in retried])
        rows = rig.calls()
        status = await _cli(env, "status", sub.batch_id[:12])
        data = json.loads((await _cli(env, "status", sub.batch_id[:12], "--json")).stdout)
    stats = emu.stats()
    assert all(j.state == State.COMPLETE for j in jobs), [j.error for j in jobs]
    assert stats["batch"]["jobs_created"] == 1 and stats["batch"]["requests"] == 3, stats
    _assert_answered_in_batch_mode(rows, stats, 3)
    assert {(r.get("mode"), r.get("mode_note")) for r in retried} == {("batch", None)}, retried
    booked = sum((money(r.cost_usd) for r in rows), Decimal(0))
    assert abs(booked - Decimal(stats["batch"]["billed_total"]["cost_usd"])) <= MICRO
    assert booked <= group_usd  # within the budget the refusal asked for
    # each request booked to its own document's new run, not to the job that collected them
    own = {r["document_id"]: r["job_id"] for r in retried}
    assert {str(r.document_id): r.job_id for r in rows if r.mode == "batch"} == own
    # `status` still says Batch Mode, in its mode line and its mode column.
    assert status.returncode == 0, status.stderr
    assert "mode: batch, as asked" in status.stdout, status.stdout
    header = next(line for line in status.stdout.splitlines() if "document" in line
                  and "status" in line)  # fmt: skip
    assert "mode" in header.split(), status.stdout
    assert {d["mode"]["shown"] for d in data["documents"]} == {"batch"}, data["documents"]


async def test_a_cancelled_batch_mode_batch_retried_through_the_api_stays_in_batch_mode(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    docs = memo_uploads(2)
    with start_emulator(batch_delay_s=600) as slow:  # ends when the test finishes it
        for name, value in slow.env.items():  # the API's own provider: the same emulator
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("GOOGLE_API_KEY", "")
        settings = api_settings(tmp_path, redis_url, key_prefix,
                                database_url=pipeline_env["PIPELINE_DATABASE_URL"],
                                provider="emulator")  # fmt: skip
        async with running_pipeline(slow, redis_url, key_prefix, provider_name="emulator",
                                    **FAST_BATCH_POLL) as rig:  # fmt: skip
            sub = await submit_uploads(rig.client, docs, mode="batch", budget_usd=Decimal(5),
                                       services=rig.services)  # fmt: skip
            first = await _group_created(rig, sub.job_ids[0])
            async with api_client(settings) as (api, _):
                cancelled = (await api.post(f"/batches/{sub.batch_id}/cancel")).json()
                assert cancelled["batch_jobs"] == [first], cancelled
                jobs = await _finished(rig, sub.job_ids)
                assert {j.state for j in jobs} == {State.CANCELLED}, [j.error for j in jobs]
                before = slow.stats()
                answer = await api.post(f"/batches/{sub.batch_id}/retry", json={})
                assert answer.status_code == 200, answer.text
                retried = answer.json()["documents"]
                assert {r["status"] for r in retried} == {"queued"}, retried
                second = await _group_created(rig, retried[0]["job_id"])
                assert second != first
                slow.finish_batch(second)
                jobs = await _finished(rig, [r["job_id"] for r in retried])
                view = (await api.get(f"/batches/{sub.batch_id}")).json()
            rows = [r for r in rig.calls() if r.started_at is not None]
        after = slow.stats()
    assert all(j.state == State.COMPLETE for j in jobs), [j.error for j in jobs]
    assert after["generate_requests"] == before["generate_requests"] == 0, after
    assert after["batch"]["jobs_created"] == 2 and after["batch"]["requests"] == 2, after
    new_rows = [r for r in rows if r.outcome in ("ok", "from_store")]
    _assert_answered_in_batch_mode(new_rows, after, 2)
    assert {r.get("mode") for r in retried} == {"batch"}, retried
    assert {d["mode"]["shown"] for d in view["documents"]} == {"batch"}, view["documents"]


async def _group_created(rig: Rig, job_id: str) -> str:
    """The remote batch job (batches/…) of the group `job_id`'s document waits in, once
    created."""
    job = await rig.client.get(job_id)
    name = str(job.args[0]["batch_group"]["name"])

    async def remote() -> str | None:
        return (await recorded(rig.services.caller.store, name)).get("remote")

    return await eventually(remote, 60, f"the batch job of group {name}")


async def test_a_batch_mode_document_past_its_fallback_time_is_retried_interactively_saying_so(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str,
) -> None:  # fmt: skip
    """No worker: the documents wait, are cancelled, and their deadline's fallback time
    passes; the retry cannot keep Batch Mode and says so, in its answer and in `status`."""
    from pipeline.ledger.db import get_engine
    from pipeline.ledger.recorder import SqlRecorder
    from pipeline.queue.client import QueueClient
    from pipeline.redis.connection import connect_redis
    from pipeline.settings import load_settings
    from tasks.batches import batch_view
    from tasks.control import cancel_batch
    from tasks.modes import due
    from tasks.retry import retry_batch

    s = load_settings(key_prefix=key_prefix, batch_fallback_margin_s=0.5, provider="emulator")
    client = QueueClient(connect_redis(redis_url), settings=s)
    engine = get_engine(s)
    recorder = SqlRecorder(engine, client.redis, client.keys)
    try:
        sub = await submit_uploads(client, memo_uploads(2), mode="batch", deadline="3s")
        assert sub.batch_id is not None and sub.mode == "batch"
        await cancel_batch(client, recorder, engine, sub.batch_id)
        job = await client.get(sub.job_ids[0])

        async def fallback_passed() -> bool | None:
            return due(job.args[0], s) == 0 or None

        await eventually(fallback_passed, 30, "the deadline's fallback time to pass")
        _, retried = await retry_batch(client, recorder, engine, sub.batch_id, {"cancelled"})
        await recorder.flush()
        view = await batch_view(client, engine, sub.batch_id)
        args = [(await client.get(str(r.job_id))).args[0] for r in retried]
    finally:
        await client.aclose()
        engine.dispose()
    assert {(r.status, r.mode) for r in retried} == {("queued", "interactive")}, retried
    for r in retried:
        assert r.mode_note and "retried interactively at the interactive price" in r.mode_note
        assert "deadline" in r.mode_note, r.mode_note
    assert all("batch_group" not in a and a["mode"] == "interactive" for a in args), args
    assert all(a["deadline"] == job.args[0]["deadline"] for a in args)
    assert {(d.mode or {}).get("shown") for d in view.documents} == {"interactive"}
    assert all("retried interactively" in (d.mode or {}).get("why", "")
               for d in view.documents)  # fmt: skip


async def test_cancelled_batch_mode_documents_submitted_again_are_answered_by_a_new_batch_job(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str,
) -> None:  # fmt: skip
    """The other way a document runs again: submitted again in a new batch, in Batch Mode,
    after its Batch Mode run was cancelled with its batch job. The new run's group is its
    own, not the cancelled one's (whose record would send it to the interactive path)."""
    from tasks.control import cancel_batch

    docs = memo_uploads(2)
    with start_emulator(batch_delay_s=600) as slow:  # ends when the test finishes it
        async with running_pipeline(slow, redis_url, key_prefix, provider_name="emulator",
                                    **FAST_BATCH_POLL) as rig:  # fmt: skip
            sub = await submit_uploads(rig.client, docs, mode="batch", services=rig.services)
            assert sub.batch_id is not None
            first = await _group_created(rig, sub.job_ids[0])
            done = await cancel_batch(rig.client, rig.services.recorder, rig.services.engine,
                                      sub.batch_id, rig.services.provider)  # fmt: skip
            assert done.batch_jobs == [first], done
            jobs = await _finished(rig, sub.job_ids)
            assert {j.state for j in jobs} == {State.CANCELLED}, [j.error for j in jobs]
            again = await submit_uploads(rig.client, docs, mode="batch", services=rig.services)
            assert {d.status for d in again.documents} == {"queued"}, again.documents
            second = await _group_created(rig, again.job_ids[0])
            assert second != first
            slow.finish_batch(second)
            jobs = await _finished(rig, again.job_ids)
            rows = [r for r in rig.calls() if r.outcome in ("ok", "from_store")]
        stats = slow.stats()
    assert all(j.state == State.COMPLETE for j in jobs), [j.error for j in jobs]
    assert stats["batch"]["jobs_created"] == 2 and stats["batch"]["requests"] == 2, stats
    _assert_answered_in_batch_mode(rows, stats, 2)


@pytest.mark.parametrize("setting", ["interactive", "batch"])
async def test_a_document_whose_record_expired_is_retried_in_pipeline_mode_saying_so(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, setting: str,
) -> None:  # fmt: skip
    """Submitted in Batch Mode, cancelled, and its job record gone (expired) before the
    retry: the mode it ran in is not known any more, so the retry runs as a submit without
    --mode would (PIPELINE_MODE), and says so, never silently at the interactive price."""
    from pipeline.ledger.db import get_engine
    from pipeline.ledger.recorder import SqlRecorder
    from pipeline.queue.client import QueueClient
    from pipeline.redis.connection import connect_redis
    from pipeline.settings import load_settings
    from tasks.control import cancel_batch
    from tasks.retry import retry_batch

    s = load_settings(key_prefix=key_prefix, provider="emulator", mode=setting)
    client = QueueClient(connect_redis(redis_url), settings=s)
    engine = get_engine(s)
    recorder = SqlRecorder(engine, client.redis, client.keys)
    try:
        sub = await submit_uploads(client, memo_uploads(2), mode="batch")
        assert sub.batch_id is not None and sub.mode == "batch"
        await cancel_batch(client, recorder, engine, sub.batch_id)
        await recorder.flush()
        await client.redis.delete(*(client.keys.job(j) for j in sub.job_ids))  # expired
        _, retried = await retry_batch(client, recorder, engine, sub.batch_id, {"cancelled"})
        args = [(await client.get(str(r.job_id))).args[0] for r in retried]
    finally:
        await client.aclose()
        engine.dispose()
    assert {(r.status, r.mode) for r in retried} == {("queued", setting)}, retried
    for r in retried:
        assert r.mode_note and "its mode is not recorded" in r.mode_note, r.mode_note
        assert "PIPELINE_MODE" in r.mode_note, r.mode_note
    assert all(a["mode"] == setting for a in args), args
    assert all(("batch_group" in a) == (setting == "batch") for a in args), args
