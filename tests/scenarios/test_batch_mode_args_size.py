"""A Batch Mode group's member list is kept once, in the group's Redis record, never in each
of its jobs' arguments: a job's stored arguments (and its whole Redis hash while queued) do
not grow with the number of documents submitted together (issue 16: "Redis per queued
document <= 2 KB"), and the group is still answered by one Gemini batch job, its ledger
equal to the emulator's bill. A real worker, Redis, the SQLite ledger, the real google-genai
client and the emulator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from pipeline.llm.batch_group import CANDIDATES, recorded
from pipeline.queue.job import State
from pipeline.queue.record import joined
from pipeline.redis.connection import text
from tasks.submission import Submission, Upload, submit_uploads
from tests.support.emulator import RunningEmulator, start_emulator
from tests.support.paid_rig import FAST_BATCH_POLL, Rig, assert_ledger_is_the_bill, running_pipeline
from tests.support.pdfs import make_pdf

# Issue 16: what Redis holds per queued document. A job's arguments are its document's
# facts and its group's name: a few hundred bytes whatever the group's size.
PER_JOB_BYTES = 2048
MANY = 40


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    with start_emulator(batch_delay_s=1.0) as running:
        yield running


def _docs(n: int, tag: str) -> list[Upload]:
    return [Upload(f"memo-{tag}-{i:02d}.pdf",
                   make_pdf(1, f"Memo {tag} {i}. Globex signed with Initech."))
            for i in range(n)]  # fmt: skip


async def _sizes(rig: Rig, sub: Submission) -> list[tuple[int, int]]:
    """Each job's stored arguments (bytes of JSON) and its Redis hash (MEMORY USAGE, bytes)."""
    out = []
    for job_id in sub.job_ids:
        key = rig.client.keys.job(job_id)
        raw = await rig.client.redis.hgetall(key)
        fields = {text(k): text(v) for k, v in raw.items()}
        args = joined(fields, "args") or ""
        usage = await rig.client.redis.memory_usage(key, samples=0) or 0
        out.append((len(args.encode()), int(usage)))
    return out


async def test_a_jobs_arguments_do_not_grow_with_its_batch_groups_size(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, emu: RunningEmulator,
) -> None:  # fmt: skip
    async with running_pipeline(emu, redis_url, key_prefix, **FAST_BATCH_POLL) as rig:
        pair = await submit_uploads(rig.client, _docs(2, "pair"), mode="batch",
                                    services=rig.services)  # fmt: skip
        small = await _sizes(rig, pair)
        for job_id in pair.job_ids:
            assert (await rig.finished(job_id, timeout_s=90)).state == State.COMPLETE
        before = emu.stats()
        many = await submit_uploads(rig.client, _docs(MANY, "many"), mode="batch",
                                    services=rig.services)  # fmt: skip
        large = await _sizes(rig, many)
        job = await rig.client.get(many.job_ids[0])
        record = await recorded(rig.services.caller.store, job.args[0]["batch_group"]["name"])
        jobs = [await rig.finished(j, timeout_s=180) for j in many.job_ids]
        rows = rig.calls()
    after = emu.stats()
    assert len(many.job_ids) == MANY and {d.status for d in many.documents} == {"queued"}
    # Per job: the same order for 40 documents as for 2 (names are as long), under 2 KB.
    assert max(a for a, _ in large) <= max(a for a, _ in small) + 16, (small, large)
    assert all(a < PER_JOB_BYTES and m < PER_JOB_BYTES for a, m in large), large
    # The member list, once: in the group's record, naming each member's job.
    candidates = json.loads(record[CANDIDATES])
    assert sorted(c["job_id"] for c in candidates) == sorted(many.job_ids), candidates
    # All 40 answered by one batch job, nothing interactive, booked at the bill.
    assert all(j.state == State.COMPLETE for j in jobs), [j.error for j in jobs]
    assert after["batch"]["jobs_created"] - before["batch"]["jobs_created"] == 1, after
    assert after["batch"]["requests"] - before["batch"]["requests"] == MANY, after
    assert after["generate_requests"] == 0, after
    assert {r.job_id for r in rows if r.mode == "batch" and r.batch_id == many.batch_id} == \
        set(many.job_ids)  # fmt: skip
    assert_ledger_is_the_bill(rows, after["batch"])


async def test_a_group_queued_before_its_record_kept_its_members_is_still_answered(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, emu: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Jobs queued by a submitter from before the group's record kept its members: each
    job's arguments carry them all (`members`), the record has no candidates. Its members
    read them from their arguments: one batch job, each request under its own job."""
    import pipeline.llm.batch_group as batch_group
    from tasks.runs import RunSpec

    said: dict[str, list[dict[str, str]]] = {}
    new_args = RunSpec.args

    async def kept_in_args(_redis: object, _keys: object, name: str,
                           members: list[dict[str, str]]) -> None:  # fmt: skip
        said[name] = [dict(m) for m in members]

    def old_args(spec: RunSpec) -> dict[str, object]:
        args = new_args(spec)
        if spec.batch_group:
            name = str(spec.batch_group["name"])
            args["batch_group"] = {"name": name, "members": said[name]}
        return args

    monkeypatch.setattr(batch_group, "propose", kept_in_args)
    monkeypatch.setattr(RunSpec, "args", old_args)
    async with running_pipeline(emu, redis_url, key_prefix, **FAST_BATCH_POLL) as rig:
        sub = await submit_uploads(rig.client, _docs(3, "old"), mode="batch",
                                   services=rig.services)  # fmt: skip
        job = await rig.client.get(sub.job_ids[0])
        assert len(job.args[0]["batch_group"]["members"]) == 3, job.args
        jobs = [await rig.finished(j, timeout_s=90) for j in sub.job_ids]
        record = await recorded(rig.services.caller.store, job.args[0]["batch_group"]["name"])
        rows = rig.calls()
    stats = emu.stats()
    assert CANDIDATES not in record, record
    assert all(j.state == State.COMPLETE for j in jobs), [j.error for j in jobs]
    assert stats["batch"]["jobs_created"] == 1 and stats["batch"]["requests"] == 3, stats
    assert stats["generate_requests"] == 0, stats
    assert {r.job_id for r in rows if r.mode == "batch"} == set(sub.job_ids), rows
    assert_ledger_is_the_bill(rows, stats["batch"])
