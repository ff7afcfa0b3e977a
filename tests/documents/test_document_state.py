"""The rules of tasks/status.py, one by one: a document's state from its run's jobs.

The derivation is pure (jobs and surroundings in, a state out), so each rule is checked on
hand-built job records here; the scenario tests drive the same rules through real workers.
"""

from __future__ import annotations

from tasks.status import JobView, Run, Surroundings, derive, part_id, reduce_id

ROOT = "r1"
AROUND = Surroundings(served_queues={"default"})


def job(job_id: str, state: str, **kw: object) -> JobView:
    return JobView(id=job_id, state=state, **kw)  # type: ignore[arg-type]


def chord(*part_states: str, merge: str = "waiting", **merge_kw: object) -> Run:
    n = len(part_states)
    root = job(ROOT, "complete", result={"chunks": n, "callback_job": reduce_id(ROOT)})
    parts: list[JobView | None] = [
        job(part_id(ROOT, i), s, pages=(2 * i + 1, 2 * i + 2),
            error="400 INVALID_ARGUMENT: refused" if s == "failed" else None)
        for i, s in enumerate(part_states)
    ]  # fmt: skip
    return Run(root, job(reduce_id(ROOT), merge, **merge_kw), parts)


def test_complete_only_when_the_result_is_stored() -> None:
    run = chord("complete", "complete", merge="complete")
    assert derive(run, True, AROUND).status == "complete"
    # The merge job finished but the ledger has no result yet: not complete.
    state = derive(run, False, AROUND)
    assert state.status == "running" and state.reason == "saving the merged result"


def test_a_merge_that_failed_fails_the_document_with_its_whole_reason() -> None:
    long_error = "ProviderError: " + "x" * 3000 + " END"
    run = chord("complete", "complete", "complete", merge="failed", error=long_error)
    state = derive(run, False, AROUND)
    assert state.status == "failed"
    assert state.reason == f"merging the 3 parts failed: {long_error}"  # never cut
    assert state.job_id == reduce_id(ROOT)


def test_a_failed_part_names_itself_and_its_pages() -> None:
    run = chord("complete", "failed", "complete", merge="failed", error="1 of 3 failed")
    state = derive(run, False, AROUND)
    assert state.status == "failed"
    assert state.reason is not None
    assert state.reason.startswith("part 2 of 3 (pages 3-4) failed: 400 INVALID_ARGUMENT")
    assert state.job_id == part_id(ROOT, 1)


def test_an_over_budget_part_makes_the_document_over_budget() -> None:
    run = chord("complete", "over_budget", merge="failed", error="1 of 2 failed")
    assert derive(run, False, AROUND).status == "over_budget"


def test_cancel_wins_over_everything_but_a_stored_result() -> None:
    run = chord("cancelled", "failed", merge="cancelled")
    assert derive(run, False, AROUND).status == "cancelled"
    failed_root = Run(job(ROOT, "failed", reason="cancelled", error="cancelled before its parts"))
    assert derive(failed_root, False, AROUND).status == "cancelled"


def test_running_stages() -> None:
    assert derive(Run(job(ROOT, "active")), False, AROUND).reason == "parsing"
    analysing = job(ROOT, "active", progress={"stage": "analyzing", "pages": 3})
    assert derive(Run(analysing), False, AROUND).reason == "analysing 3 pages"
    run = chord("complete", "complete", "active", "queued", "queued", "queued", "queued")
    assert derive(run, False, AROUND).reason == "part 3 of 7"
    run = chord("complete", "active", "active", "queued")
    assert derive(run, False, AROUND).reason == "parts 2-3 of 4"
    run = chord("complete", "complete", merge="active")
    assert derive(run, False, AROUND).reason == "merging 2 parts"


def test_waiting_says_for_what_and_until_when() -> None:
    budget = job(ROOT, "scheduled", reason="budget_window", run_at_ms=1_800_000_000_000,
                 error="waiting for the day budget: limit $1")  # fmt: skip
    state = derive(Run(budget), False, AROUND)
    assert (state.status, state.kind) == ("waiting", "budget_window")
    assert state.until == "2027-01-15T08:00:00+00:00"
    assert state.reason is not None and state.reason.startswith("waiting for the day budget")

    retry = job(ROOT, "scheduled", reason="provider_error", attempt=1, max_attempts=3,
                run_at_ms=1_800_000_000_000, error="ProviderError: 503 UNAVAILABLE")  # fmt: skip
    state = derive(Run(retry), False, AROUND)
    assert (state.status, state.kind) == ("waiting", "retry")
    assert state.reason is not None and "attempt 1 of 3 failed: ProviderError: 503" in state.reason

    queued = job(ROOT, "queued", model="gemini-x")
    nobody = derive(Run(queued), False, Surroundings(served_queues=set()))
    assert (nobody.status, nobody.kind) == ("waiting", "no_worker")
    assert nobody.reason is not None and "no live worker serves queue 'default'" in nobody.reason
    quota = Surroundings(served_queues={"default"}, quota_until={"gemini-x": "2027-01-01T08:00"})
    state = derive(Run(queued), False, quota)
    assert (state.status, state.kind, state.until) == ("waiting", "daily_quota", "2027-01-01T08:00")
    paused = Surroundings(served_queues={"default"}, paused_until={"gemini-x": "2027-01-01T08:01"})
    assert derive(Run(queued), False, paused).kind == "rate_limit"
    assert derive(Run(queued), False, AROUND).status == "queued"


def test_a_job_known_only_to_the_ledger_still_counts() -> None:
    gone = Run(JobView.from_ledger(ROOT, "failed", "ValueError: boom"))
    state = derive(gone, False, Surroundings(served_queues=set()))
    assert (state.status, state.reason) == ("failed", "ValueError: boom")
    nothing = derive(Run(None), False, AROUND)
    assert nothing.status == "failed" and "retry" in (nothing.reason or "")


def test_a_job_whose_worker_is_gone_is_shown_lost_with_its_lease_and_held_money() -> None:
    """Leased to a worker without a heartbeat: not running. What its lease will do (expire.lua:
    requeue while attempts are left, dead after the last, cancelled if asked), when, and the
    money held for its call in flight; a live worker's job still runs."""
    from datetime import UTC, datetime
    from decimal import Decimal

    deadline_ms = int(datetime(2026, 11, 30, 12, 1, 2, tzinfo=UTC).timestamp() * 1000)
    lease = {"worker": "w-dead", "lease_deadline_ms": deadline_ms, "max_attempts": 3,
             "progress": {"stage": "analyzing", "pages": 1}}  # fmt: skip
    gone = Surroundings(served_queues={"default"}, live_workers={"w-live"},
                        held_usd={ROOT: Decimal("0.0130505")},
                        now_ms=deadline_ms - 60_000)  # fmt: skip
    state = derive(Run(job(ROOT, "active", attempt=1, **lease)), False, gone)
    assert (state.status, state.kind, state.job_id) == ("waiting", "worker_lost", ROOT)
    assert state.reason == (
        "worker w-dead lost (its heartbeat stopped); requeued (attempt 1/3) when its lease "
        "runs out at 12:01:02 UTC; $0.013050500 held for its call in flight (its worst "
        "case, not spent; settled when the lease runs out)")  # fmt: skip
    assert state.until == "2026-11-30T12:01:02+00:00"
    last = derive(Run(job(ROOT, "active", attempt=3, **lease)), False, gone)
    assert "ended dead (attempt 3/3, its last) when its lease runs out" in str(last.reason)
    # a Batch Mode member: its request stays held in the batch job, a requeue keeps it
    batched = derive(Run(job(ROOT, "active", attempt=1, mode={"mode": "batch", "group": "g1"},
                             **lease)), False, gone)  # fmt: skip
    assert str(batched.reason).endswith(
        "$0.013050500 held for its request in the Gemini batch job (its worst case, not spent; "
        "booked at its bill when the batch job is collected)")  # fmt: skip
    asked = derive(Run(job(ROOT, "active", attempt=1, cancel=True, **lease)), False, gone)
    assert "; cancelled when its lease runs out at 12:01:02 UTC" in str(asked.reason)
    late = Surroundings(live_workers=set(), now_ms=deadline_ms + 1)
    ran_out = derive(Run(job(ROOT, "active", attempt=1, **lease)), False, late)
    assert str(ran_out.reason).endswith("its lease ran out at 12:01:02 UTC: requeued "
                                        "(attempt 1/3) by the next live worker's sweep")
    alive = Surroundings(live_workers={"w-dead"})
    assert derive(Run(job(ROOT, "active", attempt=1, **lease)), False, alive).status == "running"
    assert derive(Run(job(ROOT, "active", attempt=1, **lease)), False, AROUND).status == "running"
    # A long document: a part on a lost worker, while no other part runs; the merge likewise.
    run = chord("complete", "active", "queued")
    run.parts[1] = job(part_id(ROOT, 1), "active", attempt=1, pages=(3, 4), **{
        k: v for k, v in lease.items() if k != "progress"})  # fmt: skip
    part = derive(run, False, gone)
    assert part.kind == "worker_lost" and str(part.reason).startswith(
        "part 2 of 3 (pages 3-4): worker w-dead lost")
    merging = chord("complete", "complete", merge="active", attempt=1, worker="w-dead",
                    lease_deadline_ms=deadline_ms, max_attempts=3)  # fmt: skip
    merged = derive(merging, False, gone)
    assert merged.kind == "worker_lost" and str(merged.reason).startswith(
        "merging 2 parts: worker w-dead lost")
