"""A document that is not run again is never sent again: a Batch Mode submission (or retry)
that answers "duplicate" for a document leaves it out of its Gemini batch job, its budget
holds and its ledger rows, whether the run that answers for it has its result, still waits
in another batch job, or took the document over between a retry's grouping and its enqueue;
and the budget warning counts none. The group is sealed with its documents once the
submitter knows each answer; one that died first leaves its members to seal it themselves.
A real worker (tests/support/paid_rig.py), Redis, the SQLite ledger, the real google-genai
client and the emulator, whose stats count the requests each batch job carried."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from pipeline.llm.batch_group import recorded
from pipeline.queue.job import State
from tasks.submission import _inspect, submit_uploads
from tests.support.emulator import RunningEmulator, start_emulator
from tests.support.paid_rig import FAST_BATCH_POLL, Rig, memo_uploads, money, running_pipeline
from tests.support.waiting import eventually


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    with start_emulator(batch_delay_s=1.0) as running:
        yield running


async def _group_created(rig: Rig, job_id: str) -> str:
    """The remote batch job (batches/…) of the group `job_id`'s document waits in."""
    job = await rig.client.get(job_id)
    name = str(job.args[0]["batch_group"]["name"])

    async def remote() -> str | None:
        return (await recorded(rig.services.caller.store, name)).get("remote")

    return await eventually(remote, 60, f"the batch job of group {name}")


def _rows_of(rows: list[Any], batch_id: str, document_id: str) -> list[Any]:
    return [r for r in rows if r.batch_id == batch_id and r.document_id == document_id]


async def test_a_document_already_analysed_is_not_sent_again_in_a_batch_mode_submission(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, emu: RunningEmulator,
) -> None:  # fmt: skip
    """The analysed document's bytes are still in the store: a cancelled earlier run of it
    holds them (pipeline/storage/holds.py keeps them for a retry)."""
    from tasks.control import cancel_batch

    done, new = memo_uploads(2)
    async with running_pipeline(emu, redis_url, key_prefix, provider_name="emulator",
                                **FAST_BATCH_POLL) as rig:  # fmt: skip
        # Queued where no worker serves, then cancelled: its job keeps holding the bytes.
        parked = await submit_uploads(rig.client, [done], mode="batch", queue="parked",
                                      services=rig.services)  # fmt: skip
        await cancel_batch(rig.client, rig.services.recorder, rig.services.engine,
                           str(parked.batch_id), rig.services.provider)  # fmt: skip
        first = await submit_uploads(rig.client, [done], mode="batch", services=rig.services)
        assert first.documents[0].status == "queued", first.documents
        assert (await rig.finished(first.job_ids[0], timeout_s=90)).state == State.COMPLETE
        before = emu.stats()
        # Room for one request's worst case, not two (the documents are alike): the group of
        # both would be refused, all or none, and the submission would say so.
        (row,) = [r for r in rig.calls() if r.mode == "batch"]
        budget = (money(row.estimated_cost_usd) * Decimal("1.5")).quantize(Decimal("1e-9"))
        sub = await submit_uploads(rig.client, [done, new], mode="batch", budget_usd=budget,
                                   services=rig.services)  # fmt: skip
        again, queued = sub.documents
        assert again.status == "duplicate" and "not paid again" in (again.reason or ""), again
        assert sub.warnings == [], sub.warnings  # the words say what is sent
        assert queued.status == "queued", queued
        job = await rig.finished(str(queued.job_id), timeout_s=90)
        rows = rig.calls()
    after = emu.stats()
    assert job.state == State.COMPLETE, job.error
    # "not paid again": the new batch job carried the new document's request alone.
    assert after["batch"]["jobs_created"] - before["batch"]["jobs_created"] == 1, after["batch"]
    assert after["batch"]["requests"] - before["batch"]["requests"] == 1, after["batch"]
    assert after["generate_requests"] == 0, after
    assert _rows_of(rows, str(sub.batch_id), str(again.sha256)) == [], [
        (r.mode, r.outcome, r.cost_usd) for r in _rows_of(rows, str(sub.batch_id),
                                                          str(again.sha256))]  # fmt: skip
    paid = [r for r in rows if r.batch_id == sub.batch_id and money(r.cost_usd) > 0]
    assert {r.document_id for r in paid} == {queued.sha256}, [(r.document_id, r.outcome)
                                                               for r in paid]  # fmt: skip


async def test_a_document_waiting_in_another_batch_job_is_not_sent_again(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str,
) -> None:  # fmt: skip
    waiting, new = memo_uploads(2)
    with start_emulator(batch_delay_s=600) as slow:  # ends when the test finishes it
        async with running_pipeline(slow, redis_url, key_prefix, provider_name="emulator",
                                    **FAST_BATCH_POLL) as rig:  # fmt: skip
            first = await submit_uploads(rig.client, [waiting], mode="batch",
                                         services=rig.services)  # fmt: skip
            earlier = await _group_created(rig, first.job_ids[0])
            sub = await submit_uploads(rig.client, [waiting, new], mode="batch",
                                       budget_usd=Decimal(5), services=rig.services)  # fmt: skip
            again, queued = sub.documents
            assert again.status == "duplicate" and again.job_id == first.job_ids[0], again
            assert "it runs once, not twice" in (again.reason or ""), again
            assert queued.status == "queued", queued
            later = await _group_created(rig, str(queued.job_id))
            assert later != earlier
            slow.finish_batch(earlier)
            slow.finish_batch(later)
            jobs = [await rig.finished(j, timeout_s=90) for j in (first.job_ids[0],
                                                                  str(queued.job_id))]  # fmt: skip
            rows = rig.calls()
        stats = slow.stats()
    assert all(j.state == State.COMPLETE for j in jobs), [j.error for j in jobs]
    # Two batch jobs, one request each: the waiting document is paid once, in its own.
    assert stats["batch"]["jobs_created"] == 2 and stats["batch"]["requests"] == 2, stats
    assert stats["generate_requests"] == 0, stats
    assert _rows_of(rows, str(sub.batch_id), str(again.sha256)) == [], [
        (r.mode, r.outcome, r.cost_usd) for r in _rows_of(rows, str(sub.batch_id),
                                                          str(again.sha256))]  # fmt: skip


async def test_a_retried_document_taken_over_before_its_enqueue_is_not_sent_in_the_retry_batch(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, emu: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """`pipeline retry` groups its Batch Mode documents first, then enqueues them one by one;
    a submission elsewhere that starts a new run of one of them in between takes it over,
    and the retry answers "duplicate" for it: its request must not go in the retry's batch
    job, nor its worst case in the retry's ledger rows."""
    import tasks.retry as retry_module
    from tasks.control import cancel_batch
    from tasks.retry import retry_batch

    docs = memo_uploads(2)
    enqueue_retry = retry_module._enqueue_retry
    taken: list[Any] = []

    async with running_pipeline(emu, redis_url, key_prefix, provider_name="emulator",
                                provider="emulator", **FAST_BATCH_POLL) as rig:  # fmt: skip

        async def take_over_first(client: Any, recorder: Any, view: Any, r: Any) -> Any:
            if not taken:  # after the grouping, before the first enqueue
                upload = next(d for d in docs if d.name == r.doc.name)
                taken.append(await submit_uploads(rig.client, [upload], mode="interactive",
                                                  services=rig.services))  # fmt: skip
            return await enqueue_retry(client, recorder, view, r)

        monkeypatch.setattr(retry_module, "_enqueue_retry", take_over_first)
        parked = await submit_uploads(rig.client, docs, mode="batch", queue="parked",
                                      services=rig.services)  # fmt: skip
        batch_id = str(parked.batch_id)
        await cancel_batch(rig.client, rig.services.recorder, rig.services.engine, batch_id,
                           rig.services.provider)  # fmt: skip
        _, retried = await retry_batch(rig.client, rig.services.recorder, rig.services.engine,
                                       batch_id, {"cancelled"})  # fmt: skip
        (other,) = taken[0].documents
        assert other.status == "queued", other
        by_name = {r.name: r for r in retried}
        lost = by_name[other.name]
        assert lost.status == "duplicate" and lost.job_id == other.job_id, lost
        (kept,) = [r for r in retried if r.name != other.name]
        assert (kept.status, kept.mode) == ("queued", "batch"), kept
        jobs = [await rig.finished(str(j), timeout_s=90) for j in (other.job_id, kept.job_id)]
        rows = rig.calls()
    stats = emu.stats()
    assert all(j.state == State.COMPLETE for j in jobs), [j.error for j in jobs]
    # The taken-over document is answered once, interactively, by the run that took it over;
    # the retry's batch job carries the other document's request alone.
    assert stats["generate_requests"] == 1, stats
    assert stats["batch"]["jobs_created"] == 1 and stats["batch"]["requests"] == 1, stats
    assert _rows_of(rows, batch_id, lost.document_id) == [], [
        (r.mode, r.outcome, r.cost_usd) for r in _rows_of(rows, batch_id, lost.document_id)]


async def test_a_group_its_submitter_never_sealed_leaves_out_a_document_another_run_answers(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The submitter dies between its enqueue and its seal (which documents the group is
    made of, said once each answer is known): its queued member waits SEAL_WAIT_S, then
    seals the group itself from whose runs are in it, leaving out the document still
    waiting in another batch job."""
    import pipeline.llm.batch_group as batch_group
    import tasks.batch_mode as batch_mode
    from pipeline.queue.record import idempotency_digest
    from tasks.plan import analyze_prompt, idempotency_key

    class SubmitterDied(Exception):
        pass

    async def dies(*_: Any) -> list[str]:
        raise SubmitterDied

    monkeypatch.setattr(batch_mode, "SEAL_WAIT_S", 1.0)
    waiting, new = memo_uploads(2)
    with start_emulator(batch_delay_s=600) as slow:  # ends when the test finishes it
        async with running_pipeline(slow, redis_url, key_prefix, provider_name="emulator",
                                    **FAST_BATCH_POLL) as rig:  # fmt: skip
            first = await submit_uploads(rig.client, [waiting], mode="batch",
                                         services=rig.services)  # fmt: skip
            earlier = await _group_created(rig, first.job_ids[0])
            monkeypatch.setattr(batch_group, "seal", dies)  # the submitter's, not the worker's
            with pytest.raises(SubmitterDied):
                await submit_uploads(rig.client, [waiting, new], mode="batch",
                                     services=rig.services)  # fmt: skip
            sha = (await asyncio.to_thread(_inspect, new, rig.client.settings,
                                           rig.client.settings.model))[1]  # fmt: skip
            key = idempotency_key(sha, rig.client.settings.model, analyze_prompt().version,
                                  "emulator")  # fmt: skip
            queued = await rig.client.redis.get(rig.client.keys.idempotency(
                idempotency_digest(key)))  # fmt: skip
            assert queued is not None
            later = await _group_created(rig, queued)
            assert later != earlier
            job = await rig.client.get(queued)
            record = await recorded(rig.services.caller.store,
                                    job.args[0]["batch_group"]["name"])  # fmt: skip
            slow.finish_batch(earlier)
            slow.finish_batch(later)
            jobs = [await rig.finished(j, timeout_s=90) for j in (first.job_ids[0], queued)]
        stats = slow.stats()
    assert all(j.state == State.COMPLETE for j in jobs), [j.error for j in jobs]
    assert json.loads(record["members"]) == [sha], record
    assert stats["batch"]["jobs_created"] == 2 and stats["batch"]["requests"] == 2, stats
    assert stats["generate_requests"] == 0, stats


async def test_a_submission_made_again_under_its_batch_id_seals_the_group_its_runs_carry(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, emu: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The API's idempotent retry of a submission whose first try died before its seal: the
    same batch id makes the same group, every document a duplicate of a run in it; those are
    its documents, sealed at once (not after SEAL_WAIT_S), and answered in Batch Mode."""
    import pipeline.llm.batch_group as batch_group

    real_seal = batch_group.seal

    class SubmitterDied(Exception):
        pass

    async def dies(*_: Any) -> list[str]:
        raise SubmitterDied

    docs = memo_uploads(2)
    async with running_pipeline(emu, redis_url, key_prefix, provider_name="emulator",
                                **FAST_BATCH_POLL) as rig:  # fmt: skip
        monkeypatch.setattr(batch_group, "seal", dies)
        with pytest.raises(SubmitterDied):
            await submit_uploads(rig.client, docs, mode="batch", batch_id="again",
                                 services=rig.services)  # fmt: skip
        monkeypatch.setattr(batch_group, "seal", real_seal)
        sub = await submit_uploads(rig.client, docs, mode="batch", batch_id="again",
                                   services=rig.services)  # fmt: skip
        assert {d.status for d in sub.documents} == {"duplicate"}, sub.documents
        jobs = [await rig.finished(str(d.job_id), timeout_s=60) for d in sub.documents]
    stats = emu.stats()
    assert all(j.state == State.COMPLETE for j in jobs), [j.error for j in jobs]
    assert stats["batch"]["jobs_created"] == 1 and stats["batch"]["requests"] == 2, stats
    assert stats["generate_requests"] == 0, stats
