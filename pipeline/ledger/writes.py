"""Every ledger write as a named, idempotent operation on a JSON-able payload.

Naming the writes is what lets the recorder park them in Redis while the database is down
and replay them later: a payload is plain JSON, and applying one twice leaves the same rows
(upserts keyed by attempt id, job id, sha256, or the result triple), so a replay after a
crash mid-flush cannot double-count.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, case, delete, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from pipeline.ledger.models import (
    Batch,
    BatchDocument,
    CallAnswer,
    Document,
    JobRow,
    LLMCall,
    Result,
)  # fmt: skip
from pipeline.llm.attempts import BATCH_MODE, CallAttempt, Outcome

Payload = dict[str, Any]
Entry = tuple[str, Payload]  # (operation name, payload): what the recorder applies or parks


# -- the entries of the task layer's writes (SqlRecorder's methods and its write_many) -------
def document_entry(
    sha256: str, *, file_name: str | None = None, size_bytes: int | None = None,
    pages: int | None = None, document_id: str | None = None,
) -> Entry:  # fmt: skip
    """A document row, its id `document_id` if given, else the sha256 itself."""
    return "document_upsert", {"id": document_id or sha256, "sha256": sha256,
                               "file_name": file_name, "bytes": size_bytes, "pages": pages}


def batch_member_entry(
    batch_id: str, document_id: str, *, job_id: str | None = None, name: str | None = None,
    model: str | None = None, prompt_version: str | None = None, provider: str | None = None,
) -> Entry:  # fmt: skip
    """`document_id` a member of `batch_id`, answered by the run rooted at `job_id` (asking
    `provider`); None leaves a field as is."""
    return "batch_document_upsert", {"batch_id": batch_id, "document_id": document_id,
                                     "job_id": job_id, "name": name, "model": model,
                                     "prompt_version": prompt_version,
                                     "provider": provider}  # fmt: skip


def job_entry(
    job_id: str, *, batch_id: str | None = None, document_id: str | None = None,
    status: str | None = None, attempts: int | None = None, started_at: datetime | None = None,
    finished_at: datetime | None = None, last_error: str | None = None,
) -> Entry:  # fmt: skip
    """A job row; None leaves a field as is."""
    return "job_upsert", {
        "id": job_id, "batch_id": batch_id, "document_id": document_id, "status": status,
        "attempts": attempts, "last_error": last_error,
        "started_at": started_at.isoformat() if started_at else None,
        "finished_at": finished_at.isoformat() if finished_at else None,
    }  # fmt: skip

ABANDONED_NOTE = (
    "the worker lost its lease mid-call; possibly billed (cost is the reserved worst case)"
)
# The same, for a call no billed provider made (the row's `provider`): nothing to bill.
_ABANDONED_NOTES = {
    "emulator": "the worker lost its lease mid-call; a rehearsal's call, never billed (cost "
                "is the reserved worst case, as Gemini would bill it)",
    "offline": "the worker lost its lease mid-call; the offline analyzer's call: no "
               "provider asked, $0",
}

_CALL_FIELDS = (
    "job_id", "batch_id", "document_id", "model", "model_version", "call_key", "attempt",
    "started_at", "finished_at", "latency_s", "outcome", "input_tokens", "output_tokens",
    "thinking_tokens", "cached_tokens", "cost_usd", "estimated_cost_usd", "price_version", "error",
    "usage_missing", "mode", "provider", "budget_at",
)  # fmt: skip
_DATES = ("started_at", "finished_at", "created_at", "budget_at")
_MONEY = ("cost_usd", "estimated_cost_usd", "budget_usd")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Outcome):
        return value.value
    return value


def call_payload(call: CallAttempt) -> Payload:
    """A CallAttempt as the JSON the buffer stores (Decimal as string, datetimes as ISO)."""
    values = {name: _jsonable(getattr(call, name)) for name in _CALL_FIELDS}
    values["id"] = call.attempt_id
    return values


def _revive(payload: Payload) -> Payload:
    """JSON back to column values: ISO strings to aware datetimes, decimal strings to Decimal."""
    out = dict(payload)
    for name in _DATES:
        if isinstance(out.get(name), str):
            parsed = datetime.fromisoformat(out[name])
            out[name] = parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    for name in _MONEY:
        if out.get(name) is not None:
            out[name] = Decimal(str(out[name]))
    return out


def _insert(session: Session, table: Table) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"ledger upserts support sqlite and postgresql, not {dialect}")


def _upsert(session: Session, table: Table, values: Payload, conflict: list[str],
            update_fields: list[str] | None) -> None:  # fmt: skip
    stmt = _insert(session, table).values(**values)
    if update_fields is None:
        stmt = stmt.on_conflict_do_nothing(index_elements=conflict)
    elif update_fields:
        stmt = stmt.on_conflict_do_update(
            index_elements=conflict, set_={f: stmt.excluded[f] for f in update_fields}
        )
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=conflict)
    session.execute(stmt)


def call_started(session: Session, payload: Payload) -> None:
    """Insert-if-absent: a late replay of `started` must never undo a settled row."""
    _upsert(session, LLMCall.__table__, _revive(payload), ["id"], None)  # type: ignore[arg-type]


def call_settled(session: Session, payload: Payload) -> None:
    """The full row wins; it carries everything `started` did, so order of replays is moot.
    Only a `budget_at` it lacks (a write parked before the field existed) leaves the
    row's as is: the day a hold counts in is decided once, by its reservation."""
    values = _revive(payload)
    if values.get("budget_at") is None:
        values.pop("budget_at", None)
    fields = [f for f in _CALL_FIELDS if f in values]
    _upsert(session, LLMCall.__table__, values, ["id"], fields)  # type: ignore[arg-type]


def abandon_filter(payload: Payload) -> list[Any]:
    """The STARTED rows of the job (or, with "ids", those attempts), started before the lost
    lease's deadline when given, its Batch Mode requests left out with "keep_batch"."""
    conditions: list[Any] = [LLMCall.outcome == Outcome.STARTED.value]
    if payload.get("ids") is not None:
        conditions.append(LLMCall.id.in_(list(payload["ids"])))
    else:
        conditions.append(LLMCall.job_id == payload["job_id"])
    if payload.get("before"):
        conditions.append(LLMCall.started_at <= datetime.fromisoformat(payload["before"]))
    if payload.get("keep_batch"):
        conditions.append(or_(LLMCall.mode.is_(None), LLMCall.mode != BATCH_MODE))
    return conditions


def call_abandoned(session: Session, payload: Payload) -> None:
    """STARTED rows of a job become ABANDONED, costed at `estimates[id]` or their reservation."""
    values = _revive({"finished_at": payload["finished_at"]})
    estimates = {k: Decimal(v) for k, v in (payload.get("estimates") or {}).items()}
    base = (
        update(LLMCall)
        .where(*abandon_filter(payload))
        .values(outcome=Outcome.ABANDONED.value, finished_at=values["finished_at"],
                error=case(*((LLMCall.provider == p, note)
                             for p, note in _ABANDONED_NOTES.items()),
                           else_=ABANDONED_NOTE))
        # SQLite returns naive datetimes; no in-Python evaluation against the aware cutoff
        .execution_options(synchronize_session=False)
    )  # fmt: skip
    for attempt_id, estimate in estimates.items():
        session.execute(
            base.where(LLMCall.id == attempt_id).values(
                cost_usd=estimate, estimated_cost_usd=estimate
            )
        )
    session.execute(base.values(cost_usd=LLMCall.estimated_cost_usd))


def batch_upsert(session: Session, payload: Payload) -> None:
    values = {k: v for k, v in _revive(payload).items() if v is not None}
    fields = [f for f in ("label", "budget_usd", "status") if f in values]
    values.setdefault("created_at", datetime.now(UTC))
    values.setdefault("status", "open")
    _upsert(session, Batch.__table__, values, ["id"], fields)  # type: ignore[arg-type]


def document_upsert(session: Session, payload: Payload) -> None:
    values = {k: v for k, v in _revive(payload).items() if v is not None}
    fields = [f for f in ("file_name", "bytes", "pages") if f in values]
    _upsert(session, Document.__table__, values, ["sha256"], fields)  # type: ignore[arg-type]


def batch_document_upsert(session: Session, payload: Payload) -> None:
    """A document joins a batch, or its row there points at a new run (the fields given)."""
    values = {k: v for k, v in _revive(payload).items() if v is not None}
    fields: list[str] = [f for f in ("job_id", "name", "model", "prompt_version") if f in values]
    values.setdefault("created_at", datetime.now(UTC))
    _upsert(session, BatchDocument.__table__, values,  # type: ignore[arg-type]
            ["batch_id", "document_id"], fields)  # fmt: skip


def job_upsert(session: Session, payload: Payload) -> None:
    """Insert the job or change only the fields given (None means leave as is)."""
    values = {k: v for k, v in _revive(payload).items() if v is not None}
    fields = [f for f in values if f not in ("id", "created_at")]
    values.setdefault("created_at", datetime.now(UTC))
    values.setdefault("status", "queued")
    values.setdefault("attempts", 0)
    _upsert(session, JobRow.__table__, values, ["id"], fields)  # type: ignore[arg-type]


def result_save(session: Session, payload: Payload) -> None:
    values = _revive(payload)
    values.setdefault("created_at", datetime.now(UTC))
    _upsert(
        session, Result.__table__, values,  # type: ignore[arg-type]
        ["document_id", "model", "prompt_version", "provider"], ["data", "created_at"],
    )  # fmt: skip


def answer_save(session: Session, payload: Payload) -> None:
    """Insert-if-absent: one call key has one answer; a replay changes nothing."""
    values = _revive(payload)
    values.setdefault("created_at", datetime.now(UTC))
    _upsert(session, CallAnswer.__table__, values, ["call_key"], None)  # type: ignore[arg-type]


def answer_forget(session: Session, payload: Payload) -> None:
    """An answer that can no longer be used (see CallStore.delete); a replay is a no-op."""
    session.execute(delete(CallAnswer).where(CallAnswer.call_key == payload["call_key"]))


OPS: dict[str, Callable[[Session, Payload], None]] = {
    "call_started": call_started,
    "call_settled": call_settled,
    "call_abandoned": call_abandoned,
    "batch_upsert": batch_upsert,
    "document_upsert": document_upsert,
    "job_upsert": job_upsert,
    "batch_document_upsert": batch_document_upsert,
    "result_save": result_save,
    "answer_save": answer_save,
    "answer_forget": answer_forget,
}


def apply(session: Session, op: str, payload: Payload) -> None:
    try:
        handler = OPS[op]
    except KeyError:
        raise ValueError(f"unknown ledger operation {op!r} in the buffer") from None
    handler(session, payload)
