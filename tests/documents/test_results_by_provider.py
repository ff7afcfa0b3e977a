"""A stored result belongs to the provider that answered: a real run of a document rehearsed
against the emulator (same Redis, same ledger) is shown by its own jobs, never as complete
with the rehearsal's answer, and the rehearsal's result never replaces the real one. The
real google-genai client against the emulator, a real worker, Redis and the SQLite ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pipeline.ledger.db import create_ledger_engine
from pipeline.queue.job import State
from tasks.batches import batch_view
from tasks.export import results_of
from tasks.submission import Upload
from tests.support.emulator import RunningEmulator, start_emulator
from tests.support.paid_rig import running_pipeline, set_faults
from tests.support.pdfs import make_pdf


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    with start_emulator() as running:
        yield running


async def _shown(rig, batch: str) -> list[tuple[str, str | None]]:  # type: ignore[no-untyped-def]
    engine = create_ledger_engine(rig.database_url)
    try:
        view = await batch_view(rig.client, engine, batch)
        return [(r["status"], r["provider"]) for r in results_of(view)]
    finally:
        engine.dispose()


async def test_a_failed_real_run_is_not_shown_complete_with_a_rehearsals_result(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, emu: RunningEmulator,
) -> None:  # fmt: skip
    doc = Upload("a.pdf", make_pdf(1, "Invoice from Acme Ltd to Bob Smith, 12 March 2024."))
    async with running_pipeline(emu, redis_url, key_prefix, provider_name="emulator") as rig:
        sub = await rig.submit(doc, batch_id="rehearsal")
        assert (await rig.finished(sub.job_ids[0])).state == State.COMPLETE
    set_faults(emu, {"kind": "block"})  # the real model blocks this prompt
    async with running_pipeline(emu, redis_url, key_prefix, provider_name="gemini") as rig:
        sub = await rig.submit(doc, batch_id="real")
        job = await rig.finished(sub.job_ids[0])
        assert job.state == State.FAILED
        # no result, and the row names the provider whose call failed (its ledger rows)
        assert await _shown(rig, "real") == [("failed", "gemini")]
        assert await _shown(rig, "rehearsal") == [("complete", "emulator")]
    set_faults(emu)  # answered normally now: the real run completes with its own result
    async with running_pipeline(emu, redis_url, key_prefix, provider_name="gemini") as rig:
        sub = await rig.submit(doc, batch_id="real-again")
        assert (await rig.finished(sub.job_ids[0])).state == State.COMPLETE
        assert await _shown(rig, "real-again") == [("complete", "gemini")]
        assert await _shown(rig, "rehearsal") == [("complete", "emulator")]  # both kept
