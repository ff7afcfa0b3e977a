"""The ledger schema. The migrations must match these models
(tests/ledger/test_schema_migrations.py checks).

Money is `Numeric(18, 9)`: nano-dollar precision, because a cheap call costs fractions of a
cent and float sums drift. (SQLite keeps NUMERIC as a double, exact to the nano-dollar below
about $1M per row; readers round back to 9 places and sum as Decimal — see report.py.)
One `llm_calls` row per attempt, so paying twice shows as two rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

MONEY = Numeric(18, 9, asdecimal=True)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Batch(Base):
    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    label: Mapped[str | None] = mapped_column(String(200))
    budget_usd: Mapped[Decimal | None] = mapped_column(MONEY)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    status: Mapped[str] = mapped_column(String(32), default="open")


class Document(Base):
    __tablename__ = "documents"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    file_name: Mapped[str | None] = mapped_column(String(500))
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    pages: Mapped[int | None] = mapped_column(Integer)


class BatchDocument(Base):
    """A document as a member of one batch: the name it was submitted under there and the
    job of its current run (the root analysis job; a long document's parts and merge hang off
    it). A document sent again in a later batch gets a row there too, pointing at the run that
    answers it, so every batch shows all of its documents, whichever run paid for them."""

    __tablename__ = "batch_documents"

    batch_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    document_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str | None] = mapped_column(String(64), index=True)
    name: Mapped[str | None] = mapped_column(String(500))
    model: Mapped[str | None] = mapped_column(String(100))
    prompt_version: Mapped[str | None] = mapped_column(String(64))
    # who the member's run asks (tasks/plan.py's provider kind); None before migration 0006
    provider: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JobRow(Base):
    """A queue job as the ledger records it (the live job is the Redis hash of queue.job.Job)."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    batch_id: Mapped[str | None] = mapped_column(String(64), index=True)
    document_id: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(32), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    # The queue key prefix that wrote it (NULL before migration 0008): the reconciler of one
    # prefix leaves another's jobs alone (its Redis keys are not there to see them).
    key_prefix: Mapped[str | None] = mapped_column(String(100))


class LLMCall(Base):
    """One attempt. batch/job/document ids are not foreign keys on purpose: a call must be
    recordable (and replayable from the Redis buffer) before or without its parent rows."""

    __tablename__ = "llm_calls"
    __table_args__ = (Index("ix_llm_calls_started_at_model", "started_at", "model"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str | None] = mapped_column(String(64), index=True)
    batch_id: Mapped[str | None] = mapped_column(String(64), index=True)
    document_id: Mapped[str | None] = mapped_column(String(64), index=True)
    model: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[str | None] = mapped_column(String(100))
    call_key: Mapped[str] = mapped_column(String(128), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # When the call's budget reservation named its UTC day and month (NULL: it held nothing;
    # started_at stands in). The budget floor counts the call in that day, as its hold does.
    budget_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    latency_s: Mapped[float | None] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(32), index=True)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    thinking_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(MONEY, default=Decimal(0))
    estimated_cost_usd: Mapped[Decimal] = mapped_column(MONEY, default=Decimal(0))
    price_version: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    # The provider left usage out: tokens and cost are the call's bound (migration 0002).
    usage_missing: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # "interactive" (generateContent) or "batch" (a Gemini batch job, priced at its discount)
    mode: Mapped[str] = mapped_column(String(16), default="interactive",
                                      server_default="interactive")  # fmt: skip
    # who answered: "gemini", "emulator" (a rehearsal: priced as Gemini bills, never billed)
    # or "offline"; "" for rows from before migration 0006
    provider: Mapped[str] = mapped_column(String(16), default="", server_default="")
    # The queue key prefix whose worker made the call (NULL before migration 0008), as on
    # JobRow: another prefix's reconciler leaves its live calls alone.
    key_prefix: Mapped[str | None] = mapped_column(String(100))


def counted_at() -> ColumnElement[datetime]:
    """SQL for the moment a call counts in a UTC day or month: its budget hold's (budget_at,
    the day the budget and its floor counted it), else when it started (it held nothing, or
    its row is from before migration 0007). Reports, charts and the windows shown use it, so
    a call reserved just before midnight is in the same day everywhere."""
    return func.coalesce(LLMCall.budget_at, LLMCall.started_at)


class Result(Base):
    """A document's final result for one model, prompt version and provider (who answered:
    "gemini", "emulator", "offline"; "" for a result that named none, before migration
    0006). Found only for its own provider: a rehearsal's never stands for Gemini's."""

    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("document_id", "model", "prompt_version", "provider"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    document_id: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(100))
    prompt_version: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(16), default="", server_default="")
    data: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CallAnswer(Base):
    """A paid answer, by call key, kept where a Redis outage or data loss cannot take it: the
    call store (pipeline/llm/callstore.py) looks here before paying for the same call again.
    `answer` is the call store's JSON of the LLMResponse."""

    __tablename__ = "call_answers"

    call_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    model_version: Mapped[str | None] = mapped_column(String(100))
    answer: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
