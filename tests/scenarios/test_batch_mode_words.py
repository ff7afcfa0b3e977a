"""What Batch Mode documents say while they wait and once cancelled, derived from the jobs and
their group as they stand now, never from a member's last look: a real worker, Redis, the
SQLite ledger, the real google-genai client and the emulator (found by a fresh-user trial:
cancelled documents said "another worker is reserving its budget", waiting ones "is being
created by another worker" for 20-30 s after the batch job existed)."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any

import pytest

from pipeline.llm.batch import GeminiBatches
from tasks.batches import BatchView, batch_view
from tasks.control import cancel_batch
from tasks.export import export, results_of
from tasks.retry import retry_batch
from tasks.submission import submit_uploads
from tests.support.emulator import start_emulator
from tests.support.paid_rig import Rig, memo_uploads, running_pipeline
from tests.support.waiting import eventually

# What a member says while it waits for another to reserve or create the group's job: never
# shown once that job exists, nor for a cancelled document.
STALE = ("another worker", "Gemini batch")


async def _view(rig: Rig, batch_id: str) -> BatchView:
    return await batch_view(rig.client, rig.services.engine, batch_id)


async def test_a_document_cancelled_in_a_pending_batch_job_says_it_was_cancelled(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str,
) -> None:  # fmt: skip
    with start_emulator(batch_delay_s=300) as slow:
        async with running_pipeline(slow, redis_url, key_prefix, batch_poll_s=0.3,
                                    batch_poll_max_s=1.0) as rig:  # fmt: skip
            sub = await submit_uploads(rig.client, memo_uploads(2), mode="batch",
                                       services=rig.services)

            async def both_in_the_batch() -> bool:
                view = await _view(rig, sub.batch_id)
                return all((d.reason or "").startswith("in Gemini batch batches/")
                           for d in view.documents)  # fmt: skip

            await eventually(both_in_the_batch, 60, "both documents to wait in the batch")
            await cancel_batch(rig.client, rig.services.recorder, rig.services.engine,
                               sub.batch_id, rig.services.provider)  # fmt: skip

            async def cancelled() -> BatchView | None:
                view = await _view(rig, sub.batch_id)
                return view if view.by_state == {"cancelled": 2} else None

            view = await eventually(cancelled, 30, "both documents to end cancelled")
            rows = list(csv.DictReader(io.StringIO(export(results_of(view), "csv"))))
            _, retried = await retry_batch(rig.client, rig.services.recorder,
                                           rig.services.engine, sub.batch_id,
                                           {"cancelled"})  # fmt: skip
    for said in ([d.reason or "" for d in view.documents] + [r["reason"] for r in rows]
                 + [r.reason or "" for r in retried]):  # fmt: skip
        assert "cancelled" in said and not any(w in said for w in STALE), said
        assert "spent on it" in said, said  # and what it cost
    assert [d.reason for d in view.documents] == [r["reason"] for r in rows]
    # "cancelled" said once, then what the cancelled run cost
    assert all(r.reason.startswith("was cancelled; ") for r in retried), retried


async def test_members_waiting_in_a_group_say_its_job_once_it_exists(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    create = GeminiBatches.create

    async def slow_create(self: GeminiBatches, *args: Any, **kwargs: Any) -> Any:
        # A create that takes a while, as a large upload does: the other member comes to
        # the group meanwhile and is told it is being created, then looks again much later.
        await asyncio.sleep(2.0)
        return await create(self, *args, **kwargs)

    monkeypatch.setattr(GeminiBatches, "create", slow_create)
    with start_emulator(batch_delay_s=300) as slow:
        async with running_pipeline(slow, redis_url, key_prefix, batch_poll_s=60,
                                    batch_poll_max_s=60) as rig:  # fmt: skip
            sub = await submit_uploads(rig.client, memo_uploads(2), mode="batch",
                                       services=rig.services)

            async def both_wait_after_the_create() -> list[dict[str, str]] | None:
                jobs = [await rig.client.get(j) for j in sub.job_ids]
                if any(j.state.value != "scheduled" for j in jobs):
                    return None
                return [{"error": j.error or ""} for j in jobs]

            jobs = await eventually(both_wait_after_the_create, 60,
                                    "both members to look again later")  # fmt: skip
            view = await _view(rig, sub.batch_id)
    # One member met the other's create (its own words are stale now), one created the job.
    assert any("another worker" in j["error"] for j in jobs), jobs
    (remote,) = {j["error"].split(",")[0] for j in jobs if j["error"].startswith("in Gemini")}
    for d in view.documents:
        assert d.status == "waiting" and d.state.kind == "in_batch", d.state
        assert d.reason and d.reason.startswith(remote + ","), d.reason
        assert "another worker" not in d.reason and "state PENDING since 20" in d.reason
