"""What a second submission of the same content means, in words that hold for its run's state.

The idempotency key returns the first run's root job for a day. Only a run that has its
result answers "not paid again": one still queued, waiting or running (a run a stopped
worker released back to its queue among them) runs once for both batches, and the calls of
it a stop cut off in flight are sent again when it runs (what that costs depends on who
answers them: pipeline/ledger/cut.py). A run that ended without a result (failed, over
budget, cancelled; also a long document whose merge failed) would leave the document
unanalysed: so a new run starts in *this* batch, under its budget, taking the key over.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc as sa_exc

from pipeline.errors import DatabaseUnavailable
from pipeline.ledger.write_behind import is_connection_error
from pipeline.queue.client import QueueClient
from pipeline.words import retry_command

if TYPE_CHECKING:
    from pipeline.ledger.cut import CutCalls
    from tasks.status import DocumentState

_ENDED_WITHOUT_RESULT = ("failed", "over_budget", "cancelled")


@dataclass(frozen=True)
class DocumentKey:
    """What makes two submissions the same run (tasks/plan.idempotency_key's parts); a
    tasks/runs.RunSpec has the same fields."""

    sha256: str
    model: str
    prompt_version: str
    provider: str


async def resubmitted(
    client: QueueClient, recorder: Any, job_id: str, spec: Any
) -> tuple[str, str, str | None]:
    """(status, job id, reason) of a document whose content `job_id`'s run has already:
    "duplicate" when that run (or a newer one a concurrent submission started) answers for
    it here too, "queued" when it ended without a result and a new run starts here."""
    from tasks.runs import enqueue_run

    state, pending = await _earlier(client, recorder, job_id, spec)
    if state is None or state.status not in _ENDED_WITHOUT_RESULT:
        return "duplicate", job_id, await _duplicate_words(recorder, job_id, state, pending,
                                                           spec.batch_id)  # fmt: skip
    handle = await enqueue_run(client, spec, replacing=job_id)
    if not handle.created:  # a concurrent submission started the new run first
        state, pending = await _earlier(client, recorder, handle.id, spec)
        return "duplicate", handle.id, await _duplicate_words(
            recorder, handle.id, state, pending, spec.batch_id, again=True)
    why = ended_words(state.status, state.reason)
    return "queued", handle.id, (
        f"its earlier run (job {job_id}) ended {why}; analysed again in this batch, under "
        "its budget"
    )


async def answered_before(
    client: QueueClient, recorder: Any, specs: list[DocumentKey]
) -> list[tuple[str, str, str] | None]:
    """What a submit of each of `specs`' documents would find, read only (`submit
    --dry-run`; the keys in one round trip): None for a new run; ("duplicate", job id,
    words) when an earlier run answers for it, as `resubmitted` says it; ("again", the
    earlier job's id, words) when that run ended without a result, so a new run would start
    (and be paid) here."""
    from tasks.plan import idempotency_key

    job_ids = await client.idempotent([idempotency_key(s.sha256, s.model, s.prompt_version,
                                                       s.provider) for s in specs])  # fmt: skip
    found: list[tuple[str, str, str] | None] = []
    for spec, job_id in zip(specs, job_ids, strict=True):
        if job_id is None:
            found.append(None)
            continue
        state, pending = await _earlier(client, recorder, job_id, spec)
        if state is None or state.status not in _ENDED_WITHOUT_RESULT:
            words = await _duplicate_words(recorder, job_id, state, pending, "")
            found.append(("duplicate", job_id, words))
            continue
        ended = ended_words(state.status, state.reason)
        found.append(("again", job_id, f"its earlier run (job {job_id}) ended {ended}; a "
                                       "submit analyses it again, under the new batch's "
                                       "budget"))  # fmt: skip
    return found


async def _earlier(client: QueueClient, recorder: Any, job_id: str,
                   spec: Any) -> tuple[DocumentState | None, list[str]]:  # fmt: skip
    from tasks.runs import earlier_run

    return await earlier_run(client, job_id, await _has_result(recorder, spec))


async def _duplicate_words(recorder: Any, job_id: str, state: DocumentState | None,
                           pending: list[str], batch_id: str,
                           again: bool = False) -> str:  # fmt: skip
    """Why nothing new was queued for the document, and what that costs: "not paid again"
    only for a run with its result."""
    same = (f"already submitted again as job {job_id}" if again
            else f"already submitted (same content as job {job_id})")  # fmt: skip
    if state is not None and state.status == "complete":
        return f"{same}, which has its result: not paid again"
    if state is not None and state.status in _ENDED_WITHOUT_RESULT:
        why = ended_words(state.status, state.reason)
        return (f"{same}, which ended without a result ({why}); {retry_command(batch_id)} "
                "analyses it again in this batch, under its budget")
    where = "running" if state is not None and state.status == "running" else "queued"
    said = [f"{same}, {where}: it runs once, not twice, and answers for this batch too"]
    cut = await _cut_earlier(recorder, pending)
    if cut is not None and cut.calls:
        said.append(cut.again_words())
    return "; ".join(said)


def ended_words(status: str, reason: str | None) -> str:
    """How a run ended, "failed: <why>"; the reason alone when it starts by saying the status
    (a run cancelled as it waited: "cancelled", not "cancelled: cancelled"; "cancelled;
    nothing spent on it", not "cancelled: cancelled; …")."""
    if not reason:
        return status
    return reason if reason == status or reason.startswith(f"{status};") else f"{status}: {reason}"


async def _cut_earlier(recorder: Any, job_ids: list[str]) -> CutCalls | None:
    """The calls of `job_ids` cut off in flight and not answered since (the ledger's
    `abandoned` rows), or None when the ledger cannot be read (unknown, so not said)."""
    from pipeline.ledger.cut import unanswered_cuts

    if not job_ids:
        return None
    try:
        return await asyncio.to_thread(unanswered_cuts, recorder.sessions, job_ids)
    except sa_exc.SQLAlchemyError as exc:
        if is_connection_error(exc):
            return None
        raise


async def _has_result(recorder: Any, spec: Any) -> bool:
    try:
        return await recorder.get_result(spec.sha256, spec.model, spec.prompt_version,
                                         spec.provider) is not None  # fmt: skip
    except DatabaseUnavailable:  # unknown: the job states alone decide
        return False
