"""A document's state, derived from its jobs: the one answer `pipeline status`, the API, the
dashboard and `/metrics` all give.

A document is analysed by a *run*: its root job (`analyze_document`) and, for a long PDF, the
chord that job hands over to — one part job per page range (`<root>-reduce.<i>`) and the merge
(`<root>-reduce`). No single job's state is the document's: the root job completes as soon as
its parts are queued, and a merge that failed leaves a complete root behind. So the state is
derived here from all of them, in this order:

    complete      the final result is stored in the ledger (nothing less counts)
    cancelled     a person cancelled the run (or a job of it)
    over_budget   the root, a part or the merge was refused by the batch budget
    failed        the root, a part or the merge ended failed or dead: the whole reason
    running       a job of the run is leased to a live worker, with its stage (parsing,
                  part 3 of 7, merging)
    waiting       the next job cannot start, and why: a budget window, the provider's daily
                  quota or a rate limit (until when), a retry back-off after an error (which),
                  no live worker serving its queue, or its job's worker was lost (leased to a
                  worker whose heartbeat stopped: requeued, or ended, when the lease in the
                  active set runs out; the lease decides that, never the heartbeat, and the
                  money held for its call in flight is named)
    queued        ready, and nothing stands in its way

Everything here is pure: the jobs arrive as `JobView`s (from the Redis hash, or from the
ledger's row once the record expired) and the world around them as `Surroundings`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pipeline.errors import WAITING_REASONS, Reason
from pipeline.money import dollars
from pipeline.queue.record import joined
from pipeline.words import counted, plural
from tasks.batch_wait import in_group

if TYPE_CHECKING:
    from tasks.batch_wait import GroupSeen

STATES = ("queued", "running", "waiting", "complete", "failed", "over_budget", "cancelled")
ENDED = frozenset({"complete", "failed", "over_budget", "cancelled"})  # nothing more will run
_FAILED_JOB = frozenset({"failed", "dead"})
_TERMINAL_JOB = frozenset({"complete", "failed", "dead", "cancelled", "over_budget"})


def ms_iso(ms: int | None) -> str | None:
    """Milliseconds since the epoch as an ISO 8601 UTC timestamp (None stays None)."""
    return None if not ms else datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def reduce_id(root_id: str) -> str:
    """The merge job of a long document's run (fixed, so a re-run split finds its chord)."""
    return f"{root_id}-reduce"


def part_id(root_id: str, index: int) -> str:
    return f"{reduce_id(root_id)}.{index}"


@dataclass
class JobView:
    """What the derivation needs of one job. `live` is False for the ledger's copy of a job
    whose Redis record expired (state only, no stage or timing)."""

    id: str
    state: str
    error: str | None = None
    reason: str | None = None
    progress: Any = None
    result: Any = None
    attempt: int = 0
    max_attempts: int = 0
    run_at_ms: int | None = None
    cancel: bool = False
    queue: str = "default"
    model: str | None = None
    pages: tuple[int, int] | None = None  # a part's page range
    live: bool = True
    worker: str | None = None  # the worker an active job is leased to
    lease_deadline_ms: int | None = None  # when that lease runs out (Redis clock, ms)
    # A root job's mode (tasks/modes.py): mode, requested, why, deadline, and for Batch
    # Mode its group's name and the document's key in it.
    mode: dict[str, Any] | None = None

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> JobView:
        """From a job's Redis hash (pipeline.queue.job.Job's fields, plus run_at_ms)."""
        args = _json(joined(h, "args"), [])  # stored in pieces (pipeline/queue/record.py)
        first = args[-1] if args and isinstance(args[-1], dict) else None
        pages = None
        if isinstance(first, dict) and first.get("first_page") is not None:
            pages = (int(first["first_page"]), int(first["last_page"]))
        hints = _json(h.get("hints"), {})
        return cls(
            id=h.get("id", ""),
            state=h.get("state", "queued"),
            error=h.get("error") or None,
            reason=h.get("reason") or None,
            progress=_json(h.get("progress"), None),
            result=_json(h.get("result"), None),
            attempt=int(h.get("attempt") or 0),
            max_attempts=int(h.get("max_attempts") or 0),
            run_at_ms=int(h["run_at_ms"]) if h.get("run_at_ms") else None,
            cancel=h.get("cancel") == "1",
            queue=h.get("queue") or "default",
            model=str(hints.get("model") or "") or None,
            pages=pages,
            mode=_mode(first),
            worker=h.get("worker") or None,
            lease_deadline_ms=int(h["lease_deadline_ms"]) if h.get("lease_deadline_ms") else None,
        )

    @classmethod
    def from_ledger(cls, job_id: str, status: str, last_error: str | None) -> JobView:
        """The ledger's row of a job whose Redis record is gone."""
        return cls(id=job_id, state=status, error=last_error or None, live=False)


@dataclass
class Surroundings:
    """What holds queued work back besides the jobs themselves. `served_queues` and
    `live_workers` are None when unknown (then nothing is blamed on missing or lost workers).
    `held_usd` is each job's calls in flight, their worst case held against budgets (the
    ledger's `started` rows, as `pipeline costs` counts them); `now_ms` says whether a lease
    has run out yet (None: not known, taken as not yet)."""

    served_queues: set[str] | None = None
    live_workers: set[str] | None = None  # ids of workers with a heartbeat
    held_usd: dict[str, Decimal] = field(default_factory=dict)  # job id -> USD
    now_ms: int | None = None
    paused_until: dict[str, str] = field(default_factory=dict)  # model -> ISO (a 429 pause)
    quota_until: dict[str, str] = field(default_factory=dict)  # model -> ISO (daily quota)
    # Batch Mode groups with a remote job, by group name: what a member waiting in one says
    # (tasks/batch_wait.py)
    groups: dict[str, GroupSeen] = field(default_factory=dict)


@dataclass
class DocumentState:
    """`status` is one of STATES. `reason` is the stage while running, else why (never cut).
    For `waiting`: `kind` (a Reason: budget_window, budget_holds, daily_quota, rate_limit;
    or retry, no_worker, worker_lost) and `until` (ISO, when known; for worker_lost, when the
    lease runs out). `job_id` names the job the state comes from (a failed part, the merge)."""

    status: str
    reason: str | None = None
    kind: str | None = None
    until: str | None = None
    job_id: str | None = None
    job_state: str | None = None


@dataclass
class Run:
    """A document's run: its root job, and for a long document its merge and parts (in order).
    Any of them may be None when neither Redis nor the ledger knows it."""

    root: JobView | None
    merge: JobView | None = None
    parts: list[JobView | None] = field(default_factory=list)

    @property
    def chunked(self) -> bool:
        return self.merge is not None or bool(self.parts)

    def jobs(self) -> list[JobView]:
        return [j for j in (self.root, self.merge, *self.parts) if j is not None]


def _json(raw: str | None, default: Any) -> Any:
    if not raw:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        return default


def _mode(args: dict[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(args, dict) or "mode" not in args:
        return None
    out = {"mode": str(args["mode"]), "requested": str(args.get("mode_requested") or
                                                        args["mode"]),
           "why": str(args.get("mode_why") or ""), "deadline": args.get("deadline")}  # fmt: skip
    group = args.get("batch_group")
    if isinstance(group, dict):
        out.update(group=str(group.get("name")), key=str(args.get("sha256")))
    return out


def not_ended(job: JobView) -> bool:
    """Whether `job` may still run: neither ended nor cancelled."""
    return job.state not in _TERMINAL_JOB and not _cancelled(job)


def _cancelled(job: JobView) -> bool:
    return job.state == "cancelled" or (job.reason == Reason.CANCELLED and job.state in
                                        _TERMINAL_JOB)  # fmt: skip


def _cancel_words(job: JobView) -> str:
    """Why a cancelled job ended: its error when that speaks of the cancel ("cancelled on
    request"), else "cancelled": one cancelled as it waited may keep its wait's words ("in
    Gemini batch ..."), no longer why it is not running."""
    error = job.error or ""
    return error if error.startswith("cancel") else "cancelled"


def part_count(root: JobView | None) -> int:
    """How many parts the root split its document into (0: not split, or not yet)."""
    for data in (root.result if root else None, root.progress if root else None):
        if isinstance(data, dict) and data.get("chunks"):
            return int(data["chunks"])
    return 0


def _part_label(index: int, total: int, job: JobView | None) -> str:
    pages = f" (pages {job.pages[0]}-{job.pages[1]})" if job and job.pages else ""
    return f"part {index + 1} of {total}{pages}"


def derive(run: Run, has_result: bool, around: Surroundings) -> DocumentState:
    """The document's state from its run; `has_result` is whether the ledger holds its final
    result. See the module docstring for the order of the rules."""
    if has_result:
        return DocumentState("complete")
    jobs = run.jobs()
    if run.root is None:
        return DocumentState(
            "failed", "no record of this document's job is left (Redis and ledger) and no "
            "result is stored; `pipeline retry BATCH --failed` analyses it again",
        )  # fmt: skip
    for job in jobs:
        if _cancelled(job):
            return DocumentState("cancelled", _cancel_words(job), job_id=job.id,
                                 job_state=job.state)  # fmt: skip
    for job in jobs:
        if job.state == "over_budget":
            return DocumentState("over_budget", job.error or "over the batch budget",
                                 job_id=job.id, job_state=job.state)  # fmt: skip
    if run.root.state in _FAILED_JOB:
        return DocumentState("failed", run.root.error or f"the analysis job ended "
                             f"{run.root.state}", job_id=run.root.id,
                             job_state=run.root.state)  # fmt: skip
    if run.root.state != "complete" or not run.chunked:
        return _one_job(run.root, around, root=True)
    return _chord(run, around)


def job_state(job: JobView, around: Surroundings) -> DocumentState:
    """One job's state by the same rules as a document's (`GET /jobs/{id}`): an ended job
    says how it ended; one not ended says what it does or waits for, e.g. `waiting` with
    kind `worker_lost` while it is still leased to a worker whose heartbeat stopped."""
    base = {"job_id": job.id, "job_state": job.state}
    if _cancelled(job):
        return DocumentState("cancelled", job.error or "cancelled", **base)
    if job.state == "over_budget":
        return DocumentState("over_budget", job.error or "over the batch budget", **base)
    if job.state in _FAILED_JOB:
        return DocumentState("failed", job.error or f"the job ended {job.state}", **base)
    if job.state == "complete":
        return DocumentState("complete", **base)
    return _one_job(job, around, root=True)


def _chord(run: Run, around: Surroundings) -> DocumentState:
    total = len(run.parts)
    failed = [(i, p) for i, p in enumerate(run.parts) if p is not None and p.state in _FAILED_JOB]
    merge = run.merge
    if failed and (merge is None or merge.state in _TERMINAL_JOB):
        i, part = failed[0]
        others = len(failed) - 1
        more = f" (and {others} more {plural(others, 'part')})" if others else ""
        return DocumentState(
            "failed",
            f"{_part_label(i, total, part)} failed{more}: {part.error or part.state}; the "
            "merge cannot run without it",
            job_id=part.id, job_state=part.state,
        )  # fmt: skip
    if merge is not None and merge.state in _FAILED_JOB:
        return DocumentState("failed", f"merging the {total} parts failed: "
                             f"{merge.error or merge.state}", job_id=merge.id,
                             job_state=merge.state)  # fmt: skip
    if merge is not None and merge.state == "complete":
        return DocumentState("running", "saving the merged result", job_id=merge.id,
                             job_state=merge.state)  # fmt: skip
    if merge is not None and merge.state not in ("waiting",):
        if merge.state == "active" and not _lost(merge, around):
            return DocumentState("running", f"merging {total} parts", job_id=merge.id,
                                 job_state="active")  # fmt: skip
        return _one_job(merge, around, what=f"merging {total} parts")
    done = sum(p is not None and p.state in _TERMINAL_JOB for p in run.parts)
    running = [(i, p) for i, p in enumerate(run.parts) if p is not None and p.state == "active"]
    active = [i for i, p in running if not _lost(p, around)]
    if running and not active:  # every running part's worker is gone
        i, lost = running[0]
        return _worker_lost(lost, around, f"{_part_label(i, total, lost)}: ")
    if active:
        first = done + 1
        last = min(total, done + len(active))
        label = f"part {first} of {total}" if first == last else f"parts {first}-{last} of {total}"
        return DocumentState("running", label, job_id=run.parts[active[0]].id,  # type: ignore[union-attr]
                             job_state="active")  # fmt: skip
    pending = [p for p in run.parts if p is not None and p.state not in _TERMINAL_JOB]
    if pending:
        return _one_job(pending[0], around, what=f"part {done + 1} of {total}")
    if merge is None:
        return DocumentState("running", "merging: its job record is gone", job_state=None)
    return DocumentState("queued", f"merging {total} parts", job_id=merge.id,
                         job_state=merge.state)  # fmt: skip


def _stage(job: JobView) -> str:
    p = job.progress if isinstance(job.progress, dict) else {}
    stage = p.get("stage")
    pages = p.get("pages")
    if stage == "analyzing" and isinstance(pages, int) and pages > 0:
        return f"analysing {counted(pages, 'page')}"
    if stage == "analyzing":
        return "analysing"
    if stage == "splitting":
        return f"splitting {p.get('pages', '?')} pages into {p.get('chunks', '?')} parts"
    if stage == "repairing":
        return "repairing an invalid answer"
    if stage == "chunked":
        return "parts queued"
    if stage == "reducing":
        return f"merging {p.get('chunks', '?')} parts"
    if job.cancel:
        return "cancelling"
    return "parsing"


def _one_job(job: JobView, around: Surroundings, *, root: bool = False,
             what: str = "") -> DocumentState:  # fmt: skip
    """One job that has not ended: running, or queued, or waiting for something."""
    prefix = f"{what}: " if what else ""
    base = {"job_id": job.id, "job_state": job.state}
    if job.state == "active" and _lost(job, around):
        return _worker_lost(job, around, prefix)
    if job.state == "active":
        stage = "cancelling" if job.cancel else (_stage(job) if root else what or _stage(job))
        return DocumentState("running", stage, **base)
    if job.state == "scheduled":
        until = ms_iso(job.run_at_ms)
        at = f" (next try at {until})" if until else ""
        if job.reason in WAITING_REASONS:
            said = in_group(job, around.groups) or job.error or job.reason
            return DocumentState("waiting", f"{prefix}{said}{at}", str(job.reason), until,
                                 **base)  # fmt: skip
        if job.reason or job.error:
            return DocumentState(
                "waiting", f"{prefix}attempt {job.attempt} of {job.max_attempts} failed: "
                f"{job.error or job.reason}; next attempt at {until or 'soon'}",
                "retry", until, **base,
            )  # fmt: skip
        return DocumentState("queued", f"{prefix}starts at {until}" if until else what or None,
                             **base)  # fmt: skip
    if job.state == "queued" and job.live:
        served = around.served_queues
        if served is not None and job.queue not in served:
            return DocumentState(
                "waiting", f"{prefix}no live worker serves queue '{job.queue}'; start one with "
                f"`pipeline worker`" + (f" --queue {job.queue}" if job.queue != "default"
                                        else ""), "no_worker", None, **base,
            )  # fmt: skip
        model = job.model or ""
        if model in around.quota_until:
            until = around.quota_until[model]
            return DocumentState("waiting", f"{prefix}{model}: the provider's daily quota is "
                                 f"used up until {until}", "daily_quota", until,
                                 **base)  # fmt: skip
        if model in around.paused_until:
            until = around.paused_until[model]
            return DocumentState("waiting", f"{prefix}{model}: rate limited (429) until "
                                 f"{until}", "rate_limit", until, **base)  # fmt: skip
    if job.state == "complete":  # a single-call document whose result is not stored (yet)
        return DocumentState("running", "saving the result", **base)
    return DocumentState("queued", what or None, **base)


def _lost(job: JobView, around: Surroundings) -> bool:
    """Whether `job` is leased to a worker that no longer beats (known only with the
    registry read: `around.live_workers`)."""
    return (around.live_workers is not None and job.live and job.worker is not None
            and job.worker not in around.live_workers)  # fmt: skip


def _worker_lost(job: JobView, around: Surroundings, prefix: str = "") -> DocumentState:
    """An active job whose worker is gone: what its lease will do and when, and the money
    held for its call in flight. expire.lua decides: requeued while attempts are left,
    dead after the last, cancelled when a cancel was asked."""
    deadline = job.lease_deadline_ms
    at = (f"{datetime.fromtimestamp(deadline / 1000, UTC):%H:%M:%S} UTC" if deadline
          else "an unknown time")  # fmt: skip
    tries = f"attempt {job.attempt}/{job.max_attempts}"
    if job.cancel:
        then = "cancelled"
    elif job.attempt < job.max_attempts:
        then = f"requeued ({tries})"
    else:
        then = f"ended dead ({tries}, its last)"
    if deadline and around.now_ms is not None and deadline <= around.now_ms:
        when = f"its lease ran out at {at}: {then} by the next live worker's sweep"
    else:
        when = f"{then} when its lease runs out at {at}"
    held = around.held_usd.get(job.id, Decimal(0))
    if held and (job.mode or {}).get("group"):
        # a Batch Mode request stays held while its batch job runs: a requeue keeps it
        money = (f"; {dollars(held)} held for its request in the Gemini batch job (its worst "
                 "case, not spent; booked at its bill when the batch job is collected)")
    else:
        money = (f"; {dollars(held)} held for its call in flight (its worst case, not spent; "
                 "settled when the lease runs out)" if held else "")  # fmt: skip
    name = f" {job.worker}" if job.worker else ""
    return DocumentState(
        "waiting", f"{prefix}worker{name} lost (its heartbeat stopped); {when}{money}",
        "worker_lost", ms_iso(deadline), job_id=job.id, job_state=job.state,
    )  # fmt: skip
