"""`--mode auto|batch` with a deadline, end to end: a real worker, Redis, the SQLite ledger, the
real google-genai client and the emulator.

- a deadline too short for Batch Mode: `auto` runs interactively, no batch job is created;
- a deadline reached while the emulator's batch job is still RUNNING (the test moves the
  clock by widening the fallback margin past the deadline): every document leaves it, the
  job is cancelled (billed nothing), the documents complete interactively, and the collect
  job books the batch's rows at $0 and releases the group's budget holds;
- a document cancelled out of a batch job others keep alive: its answer, billed anyway, is
  booked at its batch price as `abandoned` and never stored; the other is answered from it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from pipeline.queue.job import State
from tasks.batch_fallback import collect_job_id
from tasks.batches import batch_view
from tasks.control import cancel_job
from tasks.submission import submit_uploads
from tests.support.emulator import start_emulator
from tests.support.paid_rig import FAST_BATCH_POLL, MICRO, memo_uploads, money, running_pipeline
from tests.support.waiting import eventually


async def test_a_deadline_too_short_for_batch_mode_finishes_interactively(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str,
) -> None:  # fmt: skip
    with start_emulator(batch_delay_s=1.0) as emu:
        async with running_pipeline(emu, redis_url, key_prefix, **FAST_BATCH_POLL) as rig:
            sub = await submit_uploads(rig.client, memo_uploads(3), mode="auto", deadline="6h",
                                       services=rig.services)  # fmt: skip
            jobs = [await rig.finished(j, timeout_s=90) for j in sub.job_ids]
            view = await batch_view(rig.client, rig.services.engine, sub.batch_id)
            rows = rig.calls()
        stats = emu.stats()
    assert sub.mode == "interactive" and "under the 24 h Batch Mode needs" in sub.mode_why
    assert all(j.state == State.COMPLETE for j in jobs), [j.error for j in jobs]
    assert stats["batch"]["jobs_created"] == 0 and stats["generate_requests"] == 3
    assert rows and all(r.mode != "batch" for r in rows)
    modes = [d.as_json()["mode"] for d in view.documents]
    assert all(m["mode"] == "interactive" and m["requested"] == "auto" and m["deadline"]
               for m in modes), modes  # fmt: skip


async def test_a_deadline_reached_while_the_batch_runs_falls_back_and_completes(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str,
) -> None:  # fmt: skip
    limit = Decimal("5.00")
    # RUNNING at once and for far longer than the test: only the fallback can finish it.
    with start_emulator(batch_delay_s=3600, batch_pending_s=0) as emu:
        async with running_pipeline(emu, redis_url, key_prefix, batch_fallback_margin_s=60,
                                    **FAST_BATCH_POLL) as rig:  # fmt: skip
            deadline = datetime.now(UTC) + timedelta(hours=1)
            sub = await submit_uploads(rig.client, memo_uploads(3), mode="batch", deadline=deadline,
                                       budget_usd=limit, services=rig.services)  # fmt: skip

            async def running() -> bool:
                jobs = [await rig.client.get(j) for j in sub.job_ids]
                return all("state RUNNING" in (j.error or "") for j in jobs)

            await eventually(running, 90, "every document to wait in the RUNNING batch job")
            # The clock moves on: the deadline is now inside the margin (the workers read
            # the setting at each look, and every look is at most batch_poll_max_s away).
            rig.client.settings.batch_fallback_margin_s = 7200
            jobs = [await rig.finished(j, timeout_s=120) for j in sub.job_ids]
            group = jobs[0].args[0]["batch_group"]["name"]
            collected = await rig.finished(collect_job_id(group), timeout_s=60)
            view = await batch_view(rig.client, rig.services.engine, sub.batch_id)
            status = await rig.services.budget.status(sub.batch_id, limit)
            rows = rig.calls()
        stats = emu.stats()
    assert all(j.state == State.COMPLETE for j in jobs), [j.error for j in jobs]
    assert collected.state == State.COMPLETE and collected.result["booked"] == "CANCELLED"
    batch = stats["batch"]
    assert batch["jobs_created"] == 1 and batch["by_state"] == {"CANCELLED": 1}
    assert batch["cancelled_while"] == {"RUNNING": 1}
    assert batch["requests"] == 0 and stats["generate_requests"] == 3
    batch_rows = [r for r in rows if r.mode == "batch"]
    assert len(batch_rows) == 3
    assert {(r.outcome, r.cost_usd) for r in batch_rows} == {("error", Decimal(0))}
    assert all("CANCELLED" in (r.error or "") for r in batch_rows)
    paid = sum((money(r.cost_usd) for r in rows), Decimal(0))
    assert paid > 0 and abs(paid - Decimal(stats["billed_total"]["cost_usd"])) <= MICRO
    assert abs(status["batch"].spent_usd - paid) <= MICRO and status["batch"].reserved_usd == 0
    shown = [d.as_json()["mode"] for d in view.documents]
    assert {m["shown"] for m in shown} == {"batch -> interactive"}, shown


async def test_an_answer_billed_after_its_document_left_is_booked_and_never_used(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str,
) -> None:  # fmt: skip
    with start_emulator(batch_delay_s=3600, batch_pending_s=0) as emu:
        async with running_pipeline(emu, redis_url, key_prefix, **FAST_BATCH_POLL) as rig:
            sub = await submit_uploads(rig.client, memo_uploads(2, "Note"), mode="batch",
                                       services=rig.services)  # fmt: skip
            gone, kept = sub.job_ids

            async def in_batch() -> str | None:
                jobs = [await rig.client.get(j) for j in (gone, kept)]
                waiting = all("in Gemini batch" in (j.error or "") for j in jobs)
                return str(jobs[1].progress["batch_job"]) if waiting else None

            remote = await eventually(in_batch, 90, "both documents to wait in the batch job")
            done = await cancel_job(rig.client, rig.services.recorder, gone,
                                    rig.services.provider)  # fmt: skip
            emu.finish_batch(remote)  # Google answers both requests: one was left
            other = await rig.finished(kept, timeout_s=90)
            cancelled = await rig.finished(gone, timeout_s=60)
            rows = rig.calls()
            store = rig.services.caller.store
            stored = {r.document_id: await store.get(r.call_key) for r in rows
                      if r.mode == "batch"}  # fmt: skip
        stats = emu.stats()
    assert done.batch_jobs == []  # another document still waits in it: not cancelled
    assert cancelled.state == State.CANCELLED
    assert other.state == State.COMPLETE, other.error
    assert stats["batch"]["requests"] == 2 and stats["generate_requests"] == 0
    by_doc = {r.document_id: r for r in rows if r.mode == "batch"}
    left = by_doc[sub.documents[0].sha256]
    assert left.outcome == "abandoned" and left.cost_usd > 0  # billed: booked, never at $0
    assert "not used" in (left.error or "")
    assert stored[left.document_id] is None  # never stored as the document's answer
    used = by_doc[sub.documents[1].sha256]
    assert used.outcome == "ok" and stored[used.document_id] is not None
    booked = sum((money(r.cost_usd) for r in rows), Decimal(0))
    assert abs(booked - Decimal(stats["batch"]["billed_total"]["cost_usd"])) <= MICRO
