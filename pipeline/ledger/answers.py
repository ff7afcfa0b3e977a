"""Paid answers in the SQL ledger: the call store's durable side (`DurableAnswers` in
pipeline/llm/callstore.py).

Redis keeps answers for fast reuse, but an answer that arrives while Redis is away (or
after Redis lost its data) must still never be paid for again. So every answer is also
written here, through the recorder (buffered like any ledger write while the database is
down), and the call store looks here when Redis has nothing.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from pipeline.ledger.models import CallAnswer
from pipeline.ledger.recorder import SqlRecorder
from pipeline.ledger.write_behind import is_connection_error

log = logging.getLogger(__name__)


class LedgerAnswers:
    """`save_answer` / `find_answer` / `forget_answer` over the `call_answers` table.

    `find_answer` returns the stored JSON (the call store's encoding) of an answer saved
    within `max_age_s` seconds, or None; an unreachable database is None too (logged), so
    the call goes on as it would have without this table."""

    def __init__(self, recorder: SqlRecorder) -> None:
        self.recorder = recorder

    async def save_answer(self, call_key: str, answer: str, model_version: str | None) -> None:
        payload = {"call_key": call_key, "answer": answer, "model_version": model_version,
                   "created_at": datetime.now(UTC).isoformat()}  # fmt: skip
        await self.recorder.write("answer_save", payload)

    async def forget_answer(self, call_key: str) -> None:
        await self.recorder.write("answer_forget", {"call_key": call_key})

    async def find_answer(self, call_key: str, max_age_s: int) -> str | None:
        since = datetime.now(UTC) - timedelta(seconds=max_age_s)

        def read() -> str | None:
            with self.recorder.sessions() as session:
                return session.scalar(
                    select(CallAnswer.answer).where(
                        CallAnswer.call_key == call_key, CallAnswer.created_at >= since
                    )
                )

        try:
            return await asyncio.to_thread(read)
        except sa_exc.SQLAlchemyError as exc:
            if not is_connection_error(exc):
                raise
            log.warning("ledger database unreachable; no stored answer for call %s…",
                        call_key[:12])  # fmt: skip
            return None
