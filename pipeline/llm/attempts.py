"""How every call attempt leaves the LLM layer: a `CallAttempt` handed to a `Recorder`.

The LLM layer knows nothing of SQL; the ledger implements `Recorder`. A call is recorded
twice: `started` before the request goes out (so a worker killed mid-call leaves a trace
that becomes `abandoned`), then `settled` with its outcome, usage and cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    mode: str = "interactive"  # "batch": answered by a Gemini batch job, at the batch rate
    extra: dict[str, str] = field(default_factory=dict)


class Recorder(Protocol):
    async def started(self, call: CallAttempt) -> None: ...

    async def settled(self, call: CallAttempt) -> None: ...


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
