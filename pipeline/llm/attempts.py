"""How every call attempt leaves the LLM layer: a `CallAttempt` handed to a `Recorder`.

The LLM layer knows nothing of SQL; the ledger implements `Recorder`. A call is recorded
twice: `started` before the request goes out (so a worker killed mid-call leaves a trace
that becomes `abandoned`), then `settled` with its outcome, usage and cost.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Protocol


class Outcome(StrEnum):
    """How an attempt ended. TRUNCATED, BLOCKED and INVALID are answers that were paid for
    and not used (pipeline/llm/stop.py): booked, counted as wasted, never stored."""

    STARTED = "started"
    OK = "ok"
    RATE_LIMITED = "rate_limited"
    ERROR = "error"
    ABANDONED = "abandoned"
    FROM_STORE = "from_store"
    TRUNCATED = "truncated"  # finishReason MAX_TOKENS
    BLOCKED = "blocked"  # blockReason, no candidate, or SAFETY/RECITATION/... stop
    INVALID = "invalid"  # finished normally, failed validation


# Paid attempts whose answer was not used: what `wasted_usd` adds up (with errors and
# abandoned calls, whose possible bill bought nothing either).
UNUSED = frozenset({Outcome.TRUNCATED, Outcome.BLOCKED, Outcome.INVALID})


# A call's `mode` when a Gemini batch job answers it (pipeline/llm/batch_group.py): its row
# waits `started` while the job runs, whatever its job does meanwhile.
BATCH_MODE = "batch"


@dataclass
class CallAttempt:
    attempt_id: str  # unique per attempt (uuid hex)
    call_key: str  # (model, prompt version, content hash, settings) -> same key, same answer
    model: str  # the model asked for
    attempt: int  # 1-based attempt of this call
    started_at: datetime
    job_id: str | None = None
    batch_id: str | None = None
    document_id: str | None = None
    outcome: Outcome = Outcome.STARTED
    model_version: str | None = None  # the model that answered
    finished_at: datetime | None = None
    latency_s: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    thinking_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: Decimal = Decimal("0")
    estimated_cost_usd: Decimal = Decimal("0")  # worst case reserved before the call
    price_version: str | None = None
    error: str | None = None
    usage_missing: bool = False  # the provider left usage out: booked at the call's bound
    mode: str = "interactive"  # BATCH_MODE: answered by a Gemini batch job, at the batch rate
    provider: str = ""  # who answered (Provider.name): "gemini", "emulator", "offline"
    # The moment whose UTC day and month the call's budget hold counts in (its reservation's
    # `at`, a little before `started_at`, maybe the day before); None when nothing was held.
    # The reconciler's floor counts the call in that day, as the hold does.
    budget_at: datetime | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def snapshot(self) -> CallAttempt:
        """A copy for a recorder, so a recorder that keeps objects never sees later changes."""
        return replace(self, extra=dict(self.extra))


class Recorder(Protocol):
    async def started(self, call: CallAttempt) -> None: ...

    async def settled(self, call: CallAttempt) -> None: ...


async def record_store_hit(
    recorder: Recorder, model: str, call_key: str, now: datetime, *,
    model_version: str | None, stored_input_tokens: int, stored_output_tokens: int,
    job_id: str | None, batch_id: str | None, document_id: str | None, provider: str = "",
) -> None:  # fmt: skip
    """A call answered from the call store is still an attempt in the ledger, at $0 and
    FROM_STORE, so reuse is visible (the tokens it would have cost are kept in `extra`)."""
    record = CallAttempt(
        attempt_id=uuid.uuid4().hex, call_key=call_key, model=model, attempt=1,
        started_at=now, job_id=job_id, batch_id=batch_id, document_id=document_id,
        provider=provider,
    )
    await recorder.started(record.snapshot())
    record.outcome = Outcome.FROM_STORE
    record.model_version = model_version
    record.finished_at = now
    record.latency_s = 0.0
    record.extra = {
        "stored_input_tokens": str(stored_input_tokens),
        "stored_output_tokens": str(stored_output_tokens),
    }
    await recorder.settled(record.snapshot())


class NullRecorder:
    """For callers that keep no ledger (tests of the LLM layer alone)."""

    async def started(self, call: CallAttempt) -> None:
        return None

    async def settled(self, call: CallAttempt) -> None:
        return None


class MemoryRecorder:
    """Keeps attempts in a dict by attempt id, for tests of the LLM layer without a database."""

    def __init__(self) -> None:
        self.calls: dict[str, CallAttempt] = {}

    async def started(self, call: CallAttempt) -> None:
        self.calls[call.attempt_id] = call

    async def settled(self, call: CallAttempt) -> None:
        self.calls[call.attempt_id] = call
