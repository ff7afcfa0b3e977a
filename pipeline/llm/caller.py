"""One LLM call, end to end: store, budget, permit, ledger, provider, retries.

The order is the point of this module. For each attempt:

1. the call store is asked first — an answer already paid for is returned and recorded
   as FROM_STORE, with nothing sent and no quota or budget touched;
2. a limiter permit is taken (or the one the gate granted at claim time is used);
3. only then is the budget reserved for the worst case (BudgetExceeded propagates, the
   permit is refunded, nothing sent): a hold taken before an unbounded limiter wait could
   lapse before the call even starts;
4. a STARTED attempt is written *before* the request goes out, so a worker killed
   mid-call leaves a row the ledger can mark abandoned;
5. the provider is called while the permit's lease and the budget hold are renewed;
6. a success is stored *first* (nothing after that can make us pay for it again), then
   recorded OK with usage and cost; a failure is recorded RATE_LIMITED or ERROR. Whatever
   the ledger write does, the budget is settled and the permit released.

What a failed attempt costs: a refusal or server error is $0, but an attempt whose
outcome we cannot know (cancelled in flight, timed out) may have been billed, so it is
booked at its reserved worst case — ABANDONED when cancelled, as `mark_abandoned` does
for a worker that died mid-call.

Retries follow retry.py's policy; a 429 also pauses the model for every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from pipeline.llm.attempts import CallAttempt, Outcome, Recorder
from pipeline.llm.callstore import CallStore, call_key
from pipeline.llm.failure import ProviderCallError, ProviderFailure
from pipeline.llm.limiter import Limiter, Permit
from pipeline.llm.provider import LLMRequest, LLMResponse, Provider, Usage
from pipeline.llm.renewal import renewing
from pipeline.llm.retry import RetryBudget, RetryPolicy, exhausted_error

log = logging.getLogger(__name__)

OFFLINE_MODEL_VERSION = "offline"  # what pipeline/llm/offline.py answers as; never billed

_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![a-z])")
PDF_TOKENS_PER_PAGE = 560  # Gemini 3 MEDIUM media resolution (GEMINI.md §3.5)


class Prices(Protocol):
    """What the caller needs of a price table (pipeline/llm/pricing.py's PriceTable)."""

    def cost(self, model_version: str, usage: Usage, at: datetime) -> Decimal: ...


class SpendLimit(Protocol):
    """What the caller needs of the budgets that apply to one call (ledger.budget.CallBudget):
    hold a worst case before the call (raising BudgetExceeded when it does not fit), then
    settle the hold at the real cost, or cancel it when nothing can have been billed."""

    async def reserve(self, worst_case_usd: Decimal) -> Any: ...

    async def settle(self, token: Any, actual_usd: Decimal) -> object: ...

    async def cancel(self, token: Any) -> object: ...

    # Optional: `extend(token)` and `hold_s` let a long call keep its hold alive.


def rough_input_tokens(request: LLMRequest) -> int:
    """A no-network estimate when count_tokens is unavailable: ~4 chars a token, 560 a PDF page."""
    total = len(request.system or "") // 4
    for part in request.parts:
        if part.text:
            total += len(part.text) // 4 + 1
        if part.data is not None:
            pages = len(_PDF_PAGE.findall(part.data)) if part.mime_type == "application/pdf" else 0
            total += max(1, pages) * PDF_TOKENS_PER_PAGE
    return max(1, total)


@dataclass(frozen=True)
class _Ids:
    job_id: str | None
    batch_id: str | None
    document_id: str | None


@dataclass
class _Call:
    """What one `call()` carries from attempt to attempt."""

    request: LLMRequest
    key: str
    tokens: int
    permit: Permit | None  # the gate's permit, used by the first attempt only
    budget: SpendLimit | None
    retry_budget: RetryBudget | None
    ids: _Ids
    attempt: int = 0


class LLMCaller:
    """One paid call, done right: a limiter permit, a budget hold of the call's worst case, a
    ledger row written `started` before the request and settled after, retries that honour
    RetryInfo, and a call store so an answer that was paid for is never paid again.

    `call()` returns the provider's LLMResponse or raises: BudgetExceeded (nothing sent),
    RateLimited / DailyQuotaExhausted / ProviderError once its retries are spent, OverLimit
    for a request bigger than the per-minute token limit, UnknownModel for an unpriced model.
    """

    def __init__(
        self,
        provider: Provider,
        limiter: Limiter,
        store: CallStore,
        recorder: Recorder,
        prices: Prices | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        policy: RetryPolicy | None = None,
        attempt_timeout_s: float | None = None,
        acquire_deadline_s: float | None = None,
    ) -> None:
        self.provider = provider
        self.limiter = limiter
        self.store = store
        self.recorder = recorder
        self.prices = prices
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self.attempt_timeout_s = attempt_timeout_s
        self.acquire_deadline_s = acquire_deadline_s

    async def call(
        self,
        request: LLMRequest,
        *,
        job_id: str | None = None,
        batch_id: str | None = None,
        document_id: str | None = None,
        permit: Permit | None = None,
        budget: SpendLimit | None = None,
        retry_budget: RetryBudget | None = None,
        input_tokens: int | None = None,
    ) -> LLMResponse:
        """The answer to `request`, paid for at most once across retries, restarts and jobs.

        `input_tokens` is the estimate debited from the bucket and used for the worst-case
        budget; without it the gate's permit's estimate, else provider.count_tokens, is used.
        """
        key = call_key(request)
        ids = _Ids(job_id, batch_id, document_id)
        stored = await self.store.get(key)
        if stored is not None:
            if permit is not None:
                await self.limiter.release(permit, sent=False)
            await self._record_from_store(request, key, stored, ids)
            return stored
        if permit is not None and permit.model != request.model:
            await self.limiter.release(permit, sent=False)
            permit = None
        if input_tokens is None:
            input_tokens = permit.tokens if permit is not None else await self._count(request)
        state = _Call(request, key, input_tokens, permit, budget, retry_budget, ids)
        try:
            async for attempt in self.policy.retrying(retry_budget):
                with attempt:
                    response = await self._attempt(state)
        except ProviderCallError as exc:
            raise exhausted_error(exc.failure, state.attempt, "per-call retries") from exc
        finally:
            if state.permit is not None:  # never used: no attempt got that far
                await self.limiter.release(state.permit, sent=False)
        return response

    async def _count(self, request: LLMRequest) -> int:
        try:
            return int(await self.provider.count_tokens(request))
        except Exception:  # an estimate only: never fail a call over it
            return rough_input_tokens(request)

    def _worst_case(self, request: LLMRequest, tokens: int, at: datetime) -> Decimal:
        if self.prices is None:
            return Decimal("0")
        worst = getattr(self.prices, "worst_case_cost", None)
        if worst is not None:
            return Decimal(worst(request.model, tokens, request.max_output_tokens, at))
        usage = Usage(input_tokens=tokens, output_tokens=request.max_output_tokens)
        return self.prices.cost(request.model, usage, at)

    def _cost(self, request: LLMRequest, response: LLMResponse, at: datetime) -> Decimal:
        """The price of an answer already paid for; never raises, so it cannot lose one.

        The answering model version is priced if the table knows it, else the model asked
        for (a new version string is usually the same price); failing both, $0 and a warning
        rather than an exception after the money is spent."""
        if self.prices is None or response.model_version == OFFLINE_MODEL_VERSION:
            return Decimal("0")  # the offline analyzer never bills
        for model in dict.fromkeys(m for m in (response.model_version, request.model) if m):
            try:
                return self.prices.cost(model, response.usage, at)
            except Exception:  # UnknownModel, or no price on that date
                continue
        log.warning(
            "no price for %r (asked for %r): call booked at $0; add the model to "
            "config/pricing.toml and the ledger's figures will be short by this call",
            response.model_version, request.model,
        )
        return Decimal("0")

    async def _take_permit(self, state: _Call) -> Permit:
        if state.permit is not None:
            permit, state.permit = state.permit, None
            return permit
        return await self.limiter.acquire(
            state.request.model, state.tokens, deadline_s=self.acquire_deadline_s
        )

    async def _attempt(self, state: _Call) -> LLMResponse:
        request = state.request
        if state.retry_budget is not None:
            state.retry_budget.take()
        state.attempt += 1
        # Priced before the wait for a permit: an unknown model fails before taking quota.
        estimate = self._worst_case(request, state.tokens, self.clock())
        permit = await self._take_permit(state)
        reservation = None
        try:
            if state.budget is not None:
                reservation = await state.budget.reserve(estimate)
        except BaseException:
            await self.limiter.release(permit, sent=False)
            raise
        record = CallAttempt(
            # The hold's token when there is one: the attempt's ledger row then tells what
            # became of the held call if its worker dies (pipeline/ledger/reconcile.py).
            attempt_id=_attempt_id(reservation),
            call_key=state.key,
            model=request.model,
            attempt=state.attempt,
            started_at=self.clock(),
            estimated_cost_usd=estimate,
            price_version=_price_version(self.prices),
            job_id=state.ids.job_id,
            batch_id=state.ids.batch_id,
            document_id=state.ids.document_id,
        )
        try:
            await self.recorder.started(_snap(record))
        except BaseException:
            await self.limiter.release(permit, sent=False)
            if state.budget is not None:
                await state.budget.cancel(reservation)
            raise
        return await self._send(state, record, permit, reservation)

    async def _send(
        self, state: _Call, record: CallAttempt, permit: Permit, reservation: Any
    ) -> LLMResponse:
        request = state.request
        t0 = time.monotonic()
        try:
            try:
                async with self.limiter.hold(permit), _keep_hold(state.budget, reservation):
                    coro = self.provider.generate(request)
                    if self.attempt_timeout_s is not None:
                        response = await asyncio.wait_for(coro, self.attempt_timeout_s)
                    else:
                        response = await coro
            except TimeoutError as exc:
                raise ProviderCallError(ProviderFailure.timeout(str(exc) or "timed out")) from exc
        except ProviderCallError as exc:
            if _outcome_unknown(exc.failure):  # it may have been billed: book the worst case
                record.cost_usd = record.estimated_cost_usd
            try:
                await self._settle_failure(state, record, exc.failure, time.monotonic() - t0)
            finally:
                await asyncio.shield(self._close(state, permit, reservation, record.cost_usd))
            raise
        except BaseException as exc:  # cancelled, or a provider bug: the outcome is unknown
            record.outcome = Outcome.ABANDONED if _cancelled(exc) else Outcome.ERROR
            record.error = f"{type(exc).__name__}: {exc}"
            record.finished_at = self.clock()
            record.cost_usd = record.estimated_cost_usd  # possibly billed, as mark_abandoned
            with contextlib.suppress(Exception):
                await asyncio.shield(self._settle_unknown(state, record, permit, reservation))
            raise
        now = self.clock()
        usage = response.usage
        cost = self._cost(request, response, now)
        try:
            await self.store.put(state.key, response)  # first: a crash after this never re-pays
            record.outcome = Outcome.OK
            record.model_version = response.model_version
            record.finished_at = now
            record.latency_s = response.latency_s or (time.monotonic() - t0)
            record.input_tokens = usage.input_tokens
            record.output_tokens = usage.output_tokens
            record.thinking_tokens = usage.thinking_tokens
            record.cached_tokens = usage.cached_tokens
            record.cost_usd = cost
            await self.recorder.settled(_snap(record))
        finally:
            # Paid for whatever the store or the ledger did: settle and free the slot.
            await asyncio.shield(self._close(state, permit, reservation, cost, usage.input_tokens))
        await self.limiter.on_success(request.model)
        return response

    async def _close(
        self,
        state: _Call,
        permit: Permit,
        reservation: Any,
        cost_usd: Decimal,
        input_tokens: int | None = None,
    ) -> None:
        """Settle the budget at `cost_usd` and release the (sent) permit, each regardless of
        the other failing."""
        try:
            if state.budget is not None:
                await state.budget.settle(reservation, cost_usd)
        finally:
            await self.limiter.release(permit, input_tokens)

    async def _settle_failure(
        self, state: _Call, record: CallAttempt, failure: ProviderFailure, elapsed_s: float
    ) -> None:
        if state.retry_budget is not None:
            state.retry_budget.last_failure = failure
        if failure.rate_limited:
            await self.limiter.on_rate_limited(
                state.request.model, failure.retry_delay_s, failure.per_day
            )
        record.outcome = Outcome.RATE_LIMITED if failure.rate_limited else Outcome.ERROR
        record.error = f"{failure.code} {failure.status}: {failure.message}"
        record.finished_at = self.clock()
        record.latency_s = elapsed_s
        if failure.retry_delay_s is not None:
            record.extra["retry_delay_s"] = repr(failure.retry_delay_s)
        await self.recorder.settled(_snap(record))

    async def _settle_unknown(
        self, state: _Call, record: CallAttempt, permit: Permit, reservation: Any
    ) -> None:
        try:
            await self.recorder.settled(_snap(record))
        finally:
            await self._close(state, permit, reservation, record.cost_usd)

    async def _record_from_store(
        self, request: LLMRequest, key: str, stored: LLMResponse, ids: _Ids
    ) -> None:
        """A store hit is still an attempt in the ledger, at $0, so reuse is visible."""
        now = self.clock()
        record = CallAttempt(
            attempt_id=uuid.uuid4().hex, call_key=key, model=request.model, attempt=1,
            started_at=now, job_id=ids.job_id, batch_id=ids.batch_id, document_id=ids.document_id,
        )
        await self.recorder.started(_snap(record))
        record.outcome = Outcome.FROM_STORE
        record.model_version = stored.model_version
        record.finished_at = now
        record.latency_s = 0.0
        record.extra = {
            "stored_input_tokens": str(stored.usage.input_tokens),
            "stored_output_tokens": str(stored.usage.output_tokens),
        }
        await self.recorder.settled(_snap(record))


def _snap(record: CallAttempt) -> CallAttempt:
    """A copy for the recorder, so a recorder that keeps objects never sees later changes."""
    return replace(record, extra=dict(record.extra))


def _outcome_unknown(failure: ProviderFailure) -> bool:
    """No answer in time (our timeout, the HTTP client's, or the server's deadline): the
    provider may have processed, and billed, the request all the same."""
    return failure.status == "DEADLINE_EXCEEDED"


@contextlib.asynccontextmanager
async def _keep_hold(budget: SpendLimit | None, reservation: Any) -> AsyncIterator[None]:
    """Extend the budget hold every third of its life while the call runs, so a call that
    outlasts `hold_s` keeps its reservation (like `Limiter.hold` for the permit)."""
    extend = getattr(budget, "extend", None)
    hold_s = getattr(budget, "hold_s", None)
    if extend is None or not hold_s:
        yield
        return
    async with renewing(float(hold_s) / 3, lambda: extend(reservation), "a budget hold"):
        yield


def _attempt_id(reservation: Any) -> str:
    token = getattr(reservation, "token", None)
    return token if isinstance(token, str) and token else uuid.uuid4().hex


def _cancelled(exc: BaseException) -> bool:
    return isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit)


def _price_version(prices: object) -> str | None:
    version = getattr(prices, "version", None)
    return None if version is None else str(version)
