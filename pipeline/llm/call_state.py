"""The state one paid call carries from attempt to attempt (`LLMCaller.call`), and the
small rules the caller applies to each attempt's outcome."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.llm.failure import ProviderFailure
from pipeline.llm.limiter import Permit
from pipeline.llm.provider import LLMRequest
from pipeline.llm.retry import RetryBudget
from pipeline.llm.spend import SpendLimit
from pipeline.llm.stop import Accept

if TYPE_CHECKING:
    from pipeline.llm.uploads import CallFiles


@dataclass(frozen=True)
class CallIds:
    """Whose call it is, as the ledger records it."""

    job_id: str | None
    batch_id: str | None
    document_id: str | None


@dataclass
class CallState:
    """What one `call()` carries from attempt to attempt."""

    request: LLMRequest
    key: str
    tokens: int | None  # the limiter's debit; None: the counted input
    permit: Permit | None  # the gate's permit, used by the first attempt only
    budget: SpendLimit | None
    retry_budget: RetryBudget | None
    ids: CallIds
    accept: Accept | None = None
    billed: bool = True
    counted: int | None = None  # countTokens for the request: the bound's input tokens
    attempt: int = 0
    files: CallFiles | None = None  # the call's Files API uploads (large PDFs), if any


def outcome_unknown(failure: ProviderFailure) -> bool:
    """No answer we could read once the request may have gone out: no answer in time (our
    timeout, the HTTP client's, or the server's deadline), a connection cut after it was
    made, an answer the client failed on (`maybe_billed`). The provider may have processed,
    and billed, the request all the same."""
    return failure.maybe_billed or failure.status == "DEADLINE_EXCEEDED"


def attempt_id(reservation: Any) -> str:
    """The budget hold's token (the ledger row's id), else a fresh one."""
    token = getattr(reservation, "token", None)
    return token if isinstance(token, str) and token else uuid.uuid4().hex


def cancelled(exc: BaseException) -> bool:
    """Whether `exc` ends the call from outside (cancel, Ctrl-C, exit), not the provider."""
    return isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit)


def price_version(prices: object) -> str | None:
    """The price table's version, stored on each ledger row."""
    version = getattr(prices, "version", None)
    return None if version is None else str(version)
