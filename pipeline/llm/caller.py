"""One LLM call, end to end: store, budget, permit, ledger, provider, retries.

The order is the point of this module. For each attempt:

1. the call store is asked first — an answer already paid for (and still accepted) is
   returned and recorded as FROM_STORE, with nothing sent and no quota or budget touched;
2. the prompt is counted (countTokens, free, cached in Redis: counting.py) — the exact
   input of the bound; a large PDF is first uploaded once per call through the Files API
   (uploads.py), counted and sent as a file reference, and deleted once the call is booked;
3. a limiter permit is taken (or the one the gate granted at claim time is used);
4. only then is the budget reserved for the call's bound — the counted input at the input
   rate (long-context tier when over the threshold) plus maxOutputTokens and the thinking
   budget at the output rate (BudgetExceeded propagates, the permit is refunded, nothing
   sent): a hold taken before an unbounded limiter wait could lapse before the call starts;
5. a STARTED attempt is written *before* the request goes out, so a worker killed
   mid-call leaves a row the ledger can mark abandoned;
6. the provider is called while the permit's lease and the budget hold are renewed;
7. the answer is classified by its stop reason (stop.py) before anything parses it, then
   checked by the caller's `accept`. Only a used answer is stored, and *first* (nothing
   after that can make us pay for it again), then recorded OK; an answer cut at
   MAX_TOKENS, blocked, or invalid is recorded TRUNCATED / BLOCKED / INVALID at its cost
   and raised as an UnusableAnswer, so a retry makes a fresh call instead of replaying it.
   Usage the provider left out is booked at the call's bound (usage.py) and flagged.
   Whatever the ledger write does, the budget is settled and the permit released.

What a failed attempt costs: a refusal or server error is $0, and so is a request never
sent (its PDF file gone: DocumentMissing); but an attempt whose outcome we cannot know
(cancelled in flight, timed out, cut off or unreadable once sent) may have been billed, so it is
booked at its reserved worst case — ABANDONED when cancelled, as `mark_abandoned` does
for a worker that died mid-call. A provider that never bills (`billed = False`, the
offline analyzer) reserves nothing and books $0, whatever happens; one that reaches no
remote provider (`metered = False`, the offline analyzer again) takes no limiter permit either
(unmetered.py): its calls spend nobody's quota.

A bill above its reservation (it must not happen, but providers change) is booked in full,
logged as an error and written on the row; the budget script stops the scope from
admitting more calls until a person raises its limit (ledger/budget.py).

Retries follow retry.py's policy; a 429 also pauses the model for every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pipeline.errors import DocumentMissing
from pipeline.llm import wire
from pipeline.llm.attempts import CallAttempt, Outcome, Recorder, record_store_hit
from pipeline.llm.call_state import (
    CallIds,
    CallState,
    attempt_id,
    cancelled,
    outcome_unknown,
    price_version,
)
from pipeline.llm.callstore import CallStore, call_key
from pipeline.llm.counting import PDF_TOKENS_PER_PAGE, TokenCounter, rough_input_tokens
from pipeline.llm.failure import ProviderCallError, ProviderFailure
from pipeline.llm.limiter import Limiter, Permit
from pipeline.llm.provider import LLMRequest, LLMResponse, Provider
from pipeline.llm.retry import RetryBudget, RetryPolicy, exhausted_error
from pipeline.llm.spend import (
    Prices,
    SpendLimit,
    answer_usd,
    bound_usd,
    keep_hold,
    report_overrun,
    settle_hold,
    warn_usage_missing,
)
from pipeline.llm.stop import Accept, accepted, judge
from pipeline.llm.unmetered import Unmetered, metered
from pipeline.llm.usage import book_usage

if TYPE_CHECKING:
    from pipeline.llm.uploads import CallFiles

log = logging.getLogger(__name__)

__all__ = [
    "PDF_TOKENS_PER_PAGE", "Accept", "LLMCaller", "Prices", "SpendLimit", "rough_input_tokens",
]  # fmt: skip


class LLMCaller:
    """One paid call, done right: a limiter permit, a budget hold of the call's bound, a
    ledger row written `started` before the request and settled after, retries that honour
    RetryInfo, answers classified by stop reason, and a call store so an answer that was
    paid for and used is never paid again.

    `call()` returns the provider's LLMResponse or raises: BudgetExceeded (nothing sent),
    RateLimited / DailyQuotaExhausted / ProviderError once its retries are spent, OverLimit
    for a request bigger than the per-minute token limit, UnknownModel for an unpriced model,
    and an UnusableAnswer (AnswerTruncated, AnswerBlocked, AnswerInvalid; AnswerMalformed for
    one that could not even be read, booked at its worst case) for an answer that was paid
    for but cannot be used.
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
        counter: TokenCounter | None = None,
    ) -> None:
        self.provider = provider
        # A provider whose calls reach no one (offline) must take no one's quota.
        self.limiter = limiter if metered(provider) else Unmetered(limiter.canonical)
        self.store = store
        self.recorder = recorder
        self.prices = prices
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self.attempt_timeout_s = attempt_timeout_s
        self.acquire_deadline_s = acquire_deadline_s
        self.counter = counter or TokenCounter(provider, store.redis, store.keys)

    @property
    def billed(self) -> bool:
        """Whether the provider's answers cost money (an unknown provider is assumed to)."""
        return bool(getattr(self.provider, "billed", True))

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
        accept: Accept | None = None,
    ) -> LLMResponse:
        """The answer to `request`, paid for at most once across retries, restarts and jobs.

        `input_tokens` is the estimate debited from the limiter's bucket (default: the gate
        permit's, else the counted input); the budget always reserves the counted input.
        `accept(response)` checks a finished answer: None to use (and store) it, else the
        problem, raised as AnswerInvalid. A stored answer `accept` refuses is dropped from
        the store and asked again. The model is sent, keyed, limited and priced under its
        canonical id (the limiter's `canonical`), so "models/x" and x are one call;
        UnknownModel for an unknown model.
        """
        try:
            request = replace(request, model=self.limiter.canonical(request.model))
        except Exception:
            if permit is not None:
                await self.limiter.release(permit, sent=False)
            raise
        key = call_key(request, self.provider.name)
        ids = CallIds(job_id, batch_id, document_id)
        # The store keeps paid answers from being paid again. A provider that never bills has
        # nothing there to protect, and its answers must never stand for a billed provider's
        # (the offline demo's were replayed to an emulator rehearsal): it neither reads nor
        # writes the store.
        stored = await self.store.get(key) if self.billed else None
        if stored is not None and accepted(accept, stored) is None:
            if permit is not None:
                await self.limiter.release(permit, sent=False)
            await record_store_hit(
                self.recorder, request.model, key, self.clock(),
                model_version=stored.model_version,
                stored_input_tokens=stored.usage.input_tokens,
                stored_output_tokens=stored.usage.output_tokens, job_id=ids.job_id,
                batch_id=ids.batch_id, document_id=ids.document_id,
                provider=self.provider.name,
            )  # fmt: skip
            return stored
        if stored is not None:
            await self.store.delete(key)  # no longer usable: never replay it
        if permit is not None and permit.model != request.model:
            await self.limiter.release(permit, sent=False)
            permit = None
        if input_tokens is None and permit is not None:
            input_tokens = permit.tokens
        state = CallState(request, key, input_tokens, permit, budget, retry_budget, ids,
                      accept=accept, billed=self.billed,
                      files=self._call_files(request))  # fmt: skip
        try:
            async for attempt in self.policy.retrying(retry_budget):
                with attempt:
                    response = await self._attempt(state)
        except ProviderCallError as exc:
            raise exhausted_error(exc.failure, state.attempt, "per-call retries",
                                  self.provider.name) from exc  # fmt: skip
        finally:
            if state.permit is not None:  # never used: no attempt got that far
                await self.limiter.release(state.permit, sent=False)
            if state.files is not None:  # the outcome is booked: the uploads can go
                await asyncio.shield(state.files.release())
        return response

    def _call_files(self, request: LLMRequest) -> CallFiles | None:
        """The provider's uploads for this call (large PDFs through the Files API), or
        None when it sends everything inline."""
        make = getattr(self.provider, "call_files", None)
        return make(request) if make is not None and self.billed else None

    async def _take_permit(self, state: CallState) -> Permit:
        if state.permit is not None:
            permit, state.permit = state.permit, None
            return permit
        tokens = state.tokens if state.tokens is not None else (state.counted or 1)
        return await self.limiter.acquire(
            state.request.model, tokens, deadline_s=self.acquire_deadline_s
        )

    async def _attempt(self, state: CallState) -> LLMResponse:
        request = state.request
        if state.retry_budget is not None:
            state.retry_budget.take()
        state.attempt += 1
        estimate = Decimal(0)
        if state.files is not None and state.files.needed:
            # An upload is round trips, like the count below: a gate permit goes back first.
            # A failed upload is retried like any provider failure; nothing was billed.
            await self._give_back_gate_permit(state)
        sent = request if state.files is None else await state.files.request()
        if state.billed:
            if state.counted is None:
                state.counted = await self.counter.cached(request)
            if state.counted is None:
                # The count is a round trip: a permit held across it would be debited long
                # before its request arrives, and arrivals bunch up past the provider's
                # window. So a gate permit goes back and a fresh one is taken after.
                await self._give_back_gate_permit(state)
                # A failed count is retried like any provider failure: no bound, no call.
                # A large PDF is counted by its file reference (same prompt hash, no body).
                state.counted = await self.counter.count(sent)
            # Priced before the wait for a permit: an unknown model fails before taking quota.
            estimate = bound_usd(self.prices, request, state.counted, self.clock())
        permit = await self._take_permit(state)
        reservation = None
        try:
            if state.budget is not None and state.billed:
                reservation = await state.budget.reserve(estimate)
        except BaseException:
            await self.limiter.release(permit, sent=False)
            raise
        record = CallAttempt(
            # The hold's token when there is one: the attempt's ledger row then tells what
            # became of the held call if its worker dies (pipeline/ledger/reconcile.py).
            attempt_id=attempt_id(reservation),
            call_key=state.key,
            model=request.model,
            attempt=state.attempt,
            started_at=self.clock(),
            # The day and month the hold counts in, as the reservation chose them: read
            # after it, the clock may be past midnight UTC (the row's day is not the hold's).
            # (a SpendLimit's token is whatever its reserve returns: only the ledger's
            # Reservation carries a time)
            budget_at=getattr(reservation, "at", None),
            estimated_cost_usd=estimate,
            price_version=price_version(self.prices),
            job_id=state.ids.job_id,
            batch_id=state.ids.batch_id,
            document_id=state.ids.document_id,
            provider=self.provider.name,
        )
        try:
            await self.recorder.started(record.snapshot())
        except BaseException:
            await self.limiter.release(permit, sent=False)
            if state.budget is not None and reservation is not None:
                await state.budget.cancel(reservation)
            raise
        return await self._send(state, sent, record, permit, reservation)

    async def _give_back_gate_permit(self, state: CallState) -> None:
        if state.permit is not None:
            await self.limiter.release(state.permit, sent=False)
            state.permit = None

    async def _send(
        self, state: CallState, sent: LLMRequest, record: CallAttempt, permit: Permit,
        reservation: Any,
    ) -> LLMResponse:  # fmt: skip
        """Send `sent` (the call's request, large PDFs as file references) and book it."""
        request = state.request
        t0 = time.monotonic()
        try:
            try:
                async with self.limiter.hold(permit), keep_hold(state.budget, reservation):
                    # The provider's window counts the request from when it leaves, not
                    # from its grant (llm/wire.py); wait_for's task copies this context.
                    with wire.reporting(lambda: self.limiter.on_wire(permit)):
                        coro = self.provider.generate(sent)
                        if self.attempt_timeout_s is not None:
                            response = await asyncio.wait_for(coro, self.attempt_timeout_s)
                        else:
                            response = await coro
            except TimeoutError as exc:
                raise ProviderCallError(ProviderFailure.timeout(str(exc) or "timed out")) from exc
        except ProviderCallError as exc:
            if outcome_unknown(exc.failure):  # it may have been billed: book the worst case
                record.cost_usd = record.estimated_cost_usd
            try:
                await self._settle_failure(state, record, exc.failure, time.monotonic() - t0)
            finally:
                await asyncio.shield(self._close(state, permit, reservation, record.cost_usd))
            raise
        except DocumentMissing as exc:  # a PDF file gone before the request was built: unsent
            record.outcome, record.finished_at = Outcome.ERROR, self.clock()
            record.error = f"DocumentMissing: {exc}"
            try:
                await self.recorder.settled(record.snapshot())  # at $0: nothing was sent
            finally:
                await asyncio.shield(self._close(state, permit, reservation, Decimal(0),
                                                 sent=False))  # fmt: skip
            raise
        except BaseException as exc:  # cancelled, or a provider bug: the outcome is unknown
            record.outcome = Outcome.ABANDONED if cancelled(exc) else Outcome.ERROR
            record.error = f"{type(exc).__name__}: {exc}"
            record.finished_at = self.clock()
            record.cost_usd = record.estimated_cost_usd  # possibly billed, as mark_abandoned
            with contextlib.suppress(Exception):
                await asyncio.shield(self._settle_unknown(state, record, permit, reservation))
            raise
        now = self.clock()
        booked = book_usage(
            response.reported, response.usage,
            counted_input_tokens=state.counted or 0,
            output_bound_tokens=request.output_bound_tokens,
            answered=bool(response.text),
        )  # fmt: skip
        usage = booked.usage
        cost = Decimal(0)
        if state.billed:
            cost = answer_usd(self.prices, request, response.model_version, usage, now)
        verdict = judge(request, response, usage, state.accept)
        unusable = verdict.error
        try:
            if unusable is None and state.billed:  # a used, paid answer; first: never re-paid
                await self.store.put(state.key, response)
            record.outcome = verdict.outcome
            record.model_version = response.model_version
            record.finished_at = now
            record.latency_s = response.latency_s or (time.monotonic() - t0)
            record.input_tokens = usage.input_tokens
            record.output_tokens = usage.output_tokens
            record.thinking_tokens = usage.thinking_tokens
            record.cached_tokens = usage.cached_tokens
            record.cost_usd = cost
            record.usage_missing = booked.usage_missing
            record.error = None if unusable is None else str(unusable)
            if state.billed and cost > record.estimated_cost_usd:
                note = report_overrun(record, request)
                record.error = note + (f"; {record.error}" if unusable else "")
            await self.recorder.settled(record.snapshot())
        finally:
            # Paid for whatever the store or the ledger did: settle and free the slot.
            await asyncio.shield(self._close(state, permit, reservation, cost, usage.input_tokens))
        await self.limiter.on_success(request.model)
        if booked.usage_missing:
            await warn_usage_missing(self.store.redis, self.store.keys, booked, record)
        if unusable is not None:
            raise unusable
        return response

    async def _close(
        self,
        state: CallState,
        permit: Permit,
        reservation: Any,
        cost_usd: Decimal,
        input_tokens: int | None = None,
        sent: bool = True,
    ) -> None:
        """Settle the budget at `cost_usd` and release the permit (given back whole when its
        request was never `sent`), each regardless of the other failing."""
        try:
            await settle_hold(state.budget, reservation, cost_usd)
        finally:
            await self.limiter.release(permit, input_tokens, sent=sent)

    async def _settle_failure(
        self, state: CallState, record: CallAttempt, failure: ProviderFailure, elapsed_s: float
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
        await self.recorder.settled(record.snapshot())

    async def _settle_unknown(
        self, state: CallState, record: CallAttempt, permit: Permit, reservation: Any
    ) -> None:
        try:
            await self.recorder.settled(record.snapshot())
        finally:
            await self._close(state, permit, reservation, record.cost_usd)
