"""`SqlRecorder`: the ledger side of `pipeline.llm.attempts.Recorder`, plus the task layer's writes.

Each call attempt becomes an `llm_calls` row, written `started` before the request goes
out and settled after; jobs, batches, documents and results get their rows too. Every
write goes through the write path of write_behind.py, so a database outage parks writes in
order instead of losing them.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from pipeline.errors import DatabaseUnavailable
from pipeline.ledger import writes
from pipeline.ledger.models import Document, LLMCall, Result
from pipeline.ledger.write_behind import WriteBehind, is_connection_error
from pipeline.llm.attempts import CallAttempt

log = logging.getLogger(__name__)

_DEFAULT_MAX_OUTPUT_TOKENS = 2048


def result_provider(data: Any) -> str:
    """The provider a result record names in `produced_by` ("" when it names none)."""
    produced = data.get("produced_by") if isinstance(data, dict) else None
    return str(produced.get("provider") or "") if isinstance(produced, dict) else ""

class WorstCasePricer(Protocol):
    def worst_case_cost(
        self, model: str, input_tokens: int, max_output_tokens: int, at: datetime
    ) -> Decimal: ...


class SqlRecorder(WriteBehind):
    """The ledger's side of the LLM layer's Recorder: each call attempt becomes an
    `llm_calls` row, written `started` before the request and settled after; jobs, batches,
    documents and results get their rows too. While the database is down, writes wait in a
    Redis list and are replayed in order, once, when it is back (nothing raised to callers).
    """

    # -- the Recorder protocol ------------------------------------------------------------
    async def started(self, call: CallAttempt) -> None:
        await self._write("call_started", writes.call_payload(call))

    async def settled(self, call: CallAttempt) -> None:
        await self._write("call_settled", writes.call_payload(call))

    # -- lease expiry ---------------------------------------------------------------------
    async def mark_abandoned(
        self,
        job_id: str | None,
        prices: WorstCasePricer | None = None,
        before: datetime | None = None,
        *,
        ids: list[str] | None = None,
        keep_batch: bool = False,
    ) -> int | None:
        """Every STARTED attempt of `job_id` (or, with `ids`, those attempts) becomes
        ABANDONED, costed at its worst case.

        `before` (the lost lease's deadline) spares calls started after it: by then the job
        may be running again on another worker, and that live call is not abandoned.
        `keep_batch` spares the job's Batch Mode requests (a job that runs again looks at
        its Gemini batch job again: they wait there, and its collect settles them).

        Returns how many rows changed, or None when the database is down and the change
        was buffered (it then uses each row's own `estimated_cost_usd`).
        """
        now = datetime.now(UTC)
        payload: dict[str, Any] = {"job_id": job_id, "finished_at": now.isoformat()}
        if ids is not None:
            payload["ids"] = list(ids)
        if before is not None:
            payload["before"] = before.isoformat()
        if keep_batch:
            payload["keep_batch"] = True
        if not await self.queue_behind_buffer():
            try:
                return await asyncio.to_thread(self._abandon_now, payload, prices, now)
            except sa_exc.SQLAlchemyError as exc:
                if not is_connection_error(exc):
                    raise
                self._mark_down()
                log.warning("ledger database unreachable; buffering abandon of job %s", job_id)
        await self._park_or_spool("call_abandoned", payload)
        return None

    def _abandon_now(
        self, payload: dict[str, Any], prices: WorstCasePricer | None, now: datetime
    ) -> int:
        with self.sessions.begin() as session:
            rows = session.scalars(select(LLMCall).where(*writes.abandon_filter(payload))).all()
            estimates: dict[str, str] = {}
            for row in rows:
                if prices is not None and not row.estimated_cost_usd:
                    at = row.started_at  # SQLite hands back naive UTC datetimes
                    at = at if at.tzinfo else at.replace(tzinfo=UTC)
                    cost = prices.worst_case_cost(
                        row.model, row.input_tokens, _DEFAULT_MAX_OUTPUT_TOKENS, at
                    )
                    estimates[row.id] = str(cost)
            writes.call_abandoned(session, {**payload, "estimates": estimates})
            return len(rows)

    # -- the task layer's writes ----------------------------------------------------------
    async def upsert_batch(
        self,
        batch_id: str,
        *,
        label: str | None = None,
        budget_usd: Decimal | None = None,
        status: str | None = None,
    ) -> None:
        payload = {"id": batch_id, "label": label, "status": status,
                   "budget_usd": None if budget_usd is None else str(budget_usd)}  # fmt: skip
        await self._write("batch_upsert", payload)

    async def upsert_document(
        self,
        sha256: str,
        *,
        file_name: str | None = None,
        size_bytes: int | None = None,
        pages: int | None = None,
        document_id: str | None = None,
    ) -> str:
        """Returns the document id: `document_id` if given, else the sha256 itself."""
        op, payload = writes.document_entry(sha256, file_name=file_name, size_bytes=size_bytes,
                                            pages=pages, document_id=document_id)  # fmt: skip
        await self._write(op, payload)
        return str(payload["id"])

    async def add_to_batch(self, batch_id: str, document_id: str, **fields: str | None) -> None:
        """Record `document_id` as a member of `batch_id`, answered by the run rooted at
        `job_id` (given again when a retry starts a new run); fields as in
        writes.batch_member_entry (job_id, name, model, prompt_version, provider), None left
        as is."""
        await self._write(*writes.batch_member_entry(batch_id, document_id, **fields))

    async def upsert_job(self, job_id: str, **fields: Any) -> None:
        """A job row; fields as in writes.job_entry (batch_id, document_id, status, attempts,
        started_at, finished_at, last_error), None left as is."""
        await self._write(*writes.job_entry(job_id, **fields))

    async def update_job_status(
        self,
        job_id: str,
        status: str,
        *,
        attempts: int | None = None,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
        last_error: str | None = None,
    ) -> None:
        await self.upsert_job(
            job_id, status=status, attempts=attempts, started_at=started_at,
            finished_at=finished_at, last_error=last_error,
        )  # fmt: skip

    async def save_result(
        self, document_id: str, model: str, prompt_version: str, data: Any
    ) -> None:
        """Keep `data` (a result record) as the document's result for this model, prompt
        version and the provider its `produced_by` names (one per provider)."""
        payload = {"document_id": document_id, "model": model,
                   "prompt_version": prompt_version, "provider": result_provider(data),
                   "data": data}  # fmt: skip
        await self._write("result_save", payload)

    async def get_result(
        self, sha256: str, model: str, prompt_version: str, provider: str
    ) -> Any | None:
        """The stored answer for this document, model, prompt version and provider
        ("gemini", "emulator", "offline"), or None."""

        def read() -> Any | None:
            with self.sessions() as session:
                return session.scalar(
                    select(Result.data)
                    .join(Document, Document.id == Result.document_id)
                    .where(
                        Document.sha256 == sha256,
                        Result.model == model,
                        Result.prompt_version == prompt_version,
                        Result.provider == provider,
                    )
                )

        try:
            return await asyncio.to_thread(read)
        except sa_exc.SQLAlchemyError as exc:
            if is_connection_error(exc):
                raise DatabaseUnavailable(
                    f"cannot read stored results: {str(exc).splitlines()[0]} — "
                    "check that the ledger database is up (PIPELINE_DATABASE_URL)"
                ) from exc
            raise
