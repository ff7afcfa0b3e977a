"""Batch Mode beyond inline requests, end to end: a real worker, Redis, the SQLite ledger, the
real google-genai client and the emulator over HTTP.

- A submission whose requests are over the inline limit (PIPELINE_BATCH_INLINE_MAX_BYTES,
  set small here) goes as one JSONL input file through the Files API: one upload, one batch
  job, zero generateContent, the ledger equal to the emulator's batch bill (50 %) to
  $0.000001, the upload deleted once booked; a re-run pays nothing and uploads nothing.
- A long PDF split into parts (context budget set small) sends its parts in the group, each
  with its own key, and ends as one merged result; a re-run pays nothing.
"""

from __future__ import annotations

from decimal import Decimal

from pipeline.llm.pricing import PriceTable
from pipeline.llm.provider import Usage
from pipeline.queue.job import State
from tasks.submission import Upload, submit_uploads
from tests.support.emulator import start_emulator
from tests.support.paid_rig import (
    FAST_BATCH_POLL,
    MICRO,
    memo_uploads,
    money,
    running_pipeline,
    set_faults,
)
from tests.support.pdfs import make_pdf

# 2 pages of gemini-3.5-flash-lite (560 tokens each) per part, past the 4096 kept for output.
TWO_PAGE_PARTS = 4096 + 2 * 560


async def test_a_group_over_the_inline_limit_goes_through_one_input_file(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str,
) -> None:  # fmt: skip
    docs = memo_uploads(4)
    with start_emulator(batch_delay_s=1.0) as emu:
        async with running_pipeline(emu, redis_url, key_prefix, batch_inline_max_bytes=4096,
                                    **FAST_BATCH_POLL) as rig:  # fmt: skip
            twice = await rig.run_twice(emu, docs, "batch")
    jobs, rows, stats = twice.jobs, twice.rows, twice.stats
    reruns, rerun_rows, after = twice.reruns, twice.rerun_rows, twice.rerun_stats
    assert all(j.state == State.COMPLETE for j in jobs), [j.error for j in jobs]
    assert all(isinstance(j.result, dict) and j.result["summary"] for j in jobs)
    assert stats["files"]["uploads"] == 1 and stats["generate_requests"] == 0
    assert stats["batch"]["jobs_created"] == 1 and stats["batch"]["requests"] == 4
    assert stats["files"]["downloads"] >= 1
    assert stats["files"]["deleted"] == 1  # the input file, once the job was booked
    batch_rows = [r for r in rows if r.mode == "batch"]
    assert len(batch_rows) == 4 and {r.outcome for r in batch_rows} == {"ok"}
    booked = sum((money(r.cost_usd) for r in rows), Decimal(0))
    billed = Decimal(stats["batch"]["billed_total"]["cost_usd"])
    assert abs(booked - billed) <= MICRO
    prices = PriceTable.load()
    interactive = sum((prices.cost(r.model_version or r.model, Usage(
        input_tokens=r.input_tokens, output_tokens=r.output_tokens,
        thinking_tokens=r.thinking_tokens), r.started_at) for r in batch_rows), Decimal(0))
    assert abs(interactive / 2 - booked) <= MICRO  # 50 % of the interactive price
    # The re-run: no upload, no batch job, no call, nothing booked.
    assert all(j.state == State.COMPLETE for j in reruns)
    assert after["files"]["uploads"] == 1 and after["batch"]["jobs_created"] == 1
    assert after["generate_requests"] == 0
    assert after["batch"]["billed_total"] == stats["batch"]["billed_total"]
    assert sum((money(r.cost_usd) for r in rerun_rows), Decimal(0)) == booked


async def test_a_long_pdf_in_batch_mode_sends_its_parts_and_gets_one_merged_result(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str,
) -> None:  # fmt: skip
    long_pdf = Upload("report.pdf", make_pdf(6, "Page {n}. Globex owes Initech EUR 1,000."))
    docs = [long_pdf, *memo_uploads(1)]
    with start_emulator(batch_delay_s=1.0) as emu:
        async with running_pipeline(emu, redis_url, key_prefix,
                                    context_budget_tokens=TWO_PAGE_PARTS,
                                    **FAST_BATCH_POLL) as rig:  # fmt: skip
            twice = await rig.run_twice(emu, docs, "batch", timeout_s=120)
    sub, jobs, rows, stats = twice.submission, twice.jobs, twice.rows, twice.stats
    reruns, rerun_rows, after = twice.reruns, twice.rerun_rows, twice.rerun_stats
    assert all(j.state == State.COMPLETE for j in jobs), [j.error for j in jobs]
    merged = jobs[0].result
    assert isinstance(merged, dict) and merged["summary"] and merged["page_count"] == 6
    assert [(p["first_page"], p["last_page"]) for p in merged["parts"]] == [(1, 2), (3, 4), (5, 6)]
    # Three parts and the short memo in one batch job; only the merge call (it reads the
    # parts' answers, so it cannot join the batch that makes them) went interactively.
    assert stats["batch"]["jobs_created"] == 1 and stats["batch"]["requests"] == 4
    assert stats["generate_requests"] == 1
    long_sha, memo_sha = (d.sha256 for d in sub.documents)
    batch_rows = [r for r in rows if r.mode == "batch"]
    assert len(batch_rows) == 4 and {r.outcome for r in batch_rows} == {"ok"}
    assert sorted(r.document_id for r in batch_rows) == sorted([long_sha] * 3 + [memo_sha])
    merge = [r for r in rows if r.mode != "batch" and r.outcome != "from_store"]
    assert len(merge) == 1 and merge[0].document_id == long_sha and merge[0].outcome == "ok"
    paid = [r for r in rows if r.outcome != "from_store"]
    booked = sum((money(r.cost_usd) for r in paid), Decimal(0))
    bill = Decimal(stats["batch"]["billed_total"]["cost_usd"]) + Decimal(
        stats["billed_total"]["cost_usd"])  # fmt: skip
    assert abs(booked - bill) <= MICRO
    shown = sum((Decimal(str(j.result["used_answers_cost_usd"])) for j in jobs
                 if isinstance(j.result, dict)), Decimal(0))  # fmt: skip
    assert abs(shown - booked) <= MICRO  # each result shows what it cost, merge included
    assert all(j.state == State.COMPLETE for j in reruns)
    assert after["batch"]["jobs_created"] == 1 and after["generate_requests"] == 1
    assert sum((money(r.cost_usd) for r in rerun_rows if r.outcome != "from_store"),
               Decimal(0)) == booked  # fmt: skip


async def test_an_unreadable_line_of_the_responses_file_is_booked_as_billed_not_free(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str,
) -> None:  # fmt: skip
    """One answer of a file-fed batch job is billed but its line of the responses file is cut
    mid-JSON (`garbled`): its key cannot be read, so its request is booked at its worst case
    (it may have been billed: never $0), counted as wasted, and the document is asked
    interactively, saying so; the others are used from the batch."""
    docs = memo_uploads(3)
    with start_emulator(batch_delay_s=1.0) as emu:
        set_faults(emu, {"kind": "garbled", "when": "Memo 1.", "times": 1})
        async with running_pipeline(emu, redis_url, key_prefix, batch_inline_max_bytes=4096,
                                    **FAST_BATCH_POLL) as rig:  # fmt: skip
            sub = await submit_uploads(rig.client, docs, mode="batch", services=rig.services)
            jobs = [await rig.finished(j, timeout_s=90) for j in sub.job_ids]
            rows, report = rig.calls(), rig.report()
        stats = emu.stats()
    assert all(j.state == State.COMPLETE for j in jobs), [j.error for j in jobs]
    assert stats["files"]["uploads"] == 1 and stats["batch"]["requests"] == 3
    assert stats["generate_requests"] == 1  # the garbled one's document, interactively
    batch_rows = [r for r in rows if r.mode == "batch"]
    assert sorted(r.outcome for r in batch_rows) == ["error", "ok", "ok"]
    (lost,) = [r for r in batch_rows if r.outcome == "error"]
    assert lost.cost_usd == lost.estimated_cost_usd > 0  # possibly billed: never $0
    assert "not JSON" in (lost.error or "") and "asked again" in (lost.error or "")
    interactive = [r for r in rows if r.mode != "batch" and r.outcome == "ok"]
    assert len(interactive) == 1 and interactive[0].document_id == lost.document_id
    billed = Decimal(stats["batch"]["billed_total"]["cost_usd"]) + \
        Decimal(stats["billed_total"]["cost_usd"])  # fmt: skip
    booked = sum((money(r.cost_usd) for r in rows), Decimal(0))
    assert booked >= billed - MICRO  # the unreadable answer at its worst case, never less
    assert money(report["total"]["wasted_usd"]) == money(lost.cost_usd)
