"""The services a job's paid call goes through, assembled from settings, and the one policy
that decides what a failed call means for its job (`failed_call`).

What a process gets here: the queue plus what tasks need (process pool, LLM provider behind
the shared limiter and call store, ledger recorder, budgets) and the hooks that tie queue
events to the ledger.

Kept apart from the queue core so the queue knows nothing of LLMs or SQL. Workers, the CLI
(`run`, `submit --wait`) and the HTTP API all build their services here, the same way.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pipeline.errors import (
    AnswerBlocked,
    AnswerInvalid,
    AnswerMalformed,
    AnswerTruncated,
    BudgetExceeded,
    DailyQuotaExhausted,
    InputError,
    JobError,
    OverBudget,
    OverLimit,
    Permanent,
    PipelineError,
    ProviderError,
    RateLimited,
    Reason,
    Retry,
    UnknownModel,
)
from pipeline.money import format_usd
from pipeline.queue.client import QueueClient
from pipeline.queue.context import JobContext
from pipeline.queue.job import Job
from pipeline.queue.pool import CpuPool
from pipeline.queue.task import REGISTRY
from pipeline.queue.worker import Worker

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from pipeline.ledger.budget import Budget
    from pipeline.ledger.cut import CutCalls
    from pipeline.ledger.recorder import SqlRecorder
    from pipeline.llm.caller import LLMCaller
    from pipeline.llm.limiter import Limiter
    from pipeline.llm.pricing import PriceTable
    from pipeline.llm.provider import LLMRequest, LLMResponse, Provider
    from pipeline.llm.retry import RetryBudget
    from pipeline.llm.stop import Accept
    from pipeline.llm.tally import TallyingRecorder

log = logging.getLogger(__name__)


# A job whose budget is full only of other calls' holds waits this long (plus jitter, so
# waiting jobs do not all come back at once) for them to settle.
HELD_BUDGET_RETRY_S = 2.0
HELD_BUDGET_JITTER_S = 3.0
# An answer that was not JSON is asked again after this long: it was cut or garbled on its
# way (a proxy, a broken stream), not refused for load, so a long back-off buys nothing.
MALFORMED_RETRY_S = 2.0


# A job waiting for the day or month budget window looks again at least this often, so a
# raised limit is noticed without waiting for the window to turn.
WINDOW_RECHECK_S = 3600.0


def window_wait(scope: str, now: datetime | None = None) -> tuple[float, str]:
    """(seconds to wait, the words saying when the job tries again) for a job refused by
    the UTC day (or month) budget window: at the window's turn when that is within
    WINDOW_RECHECK_S, else WINDOW_RECHECK_S from now and again each time until the turn.
    The words name the true times, so what status says is what the job does."""
    now = now or datetime.now(UTC)
    if scope == "month":
        nxt = (now.replace(day=1) + timedelta(days=32)).replace(day=1)
    else:
        nxt = now + timedelta(days=1)
    reset = nxt.replace(hour=0, minute=0, second=0, microsecond=0)
    delay_s = min(WINDOW_RECHECK_S, max(1.0, (reset - now).total_seconds()))
    turn = f"{reset:%Y-%m-%d %H:%M} UTC"
    if delay_s < WINDOW_RECHECK_S:
        return delay_s, f"the job tries again when the window turns, at {turn}"
    at = now + timedelta(seconds=delay_s)
    return delay_s, (f"the job tries again at {at:%Y-%m-%d %H:%M:%S} UTC, then every "
                     f"{WINDOW_RECHECK_S / 3600:g} h until the window turns at {turn} (a "
                     "raised limit is noticed at the next try)")  # fmt: skip


@dataclass
class Services:
    client: QueueClient
    engine: Engine
    recorder: SqlRecorder
    budget: Budget
    prices: PriceTable
    limiter: Limiter
    provider: Provider
    caller: LLMCaller
    # One RetryBudget per running job (by job id), shared by all that job's calls; dropped
    # by the job-end hook. Kept here, not on JobContext, so the queue knows nothing of LLMs.
    retry_budgets: dict[str, RetryBudget] = field(default_factory=dict)
    tally: TallyingRecorder | None = None  # each running job's cost, for its log line
    # Jobs this process's worker gave back to their queues at shutdown: what a stop reports
    # (the calls they had in flight were cut off, ledger/cut.py).
    released: list[str] = field(default_factory=list)

    async def cut_off(self, since: datetime) -> CutCalls:
        """The calls the jobs this process released had in flight when it stopped (`since`:
        the stop's first signal), from the ledger's abandoned rows, the recorder flushed
        first (ledger/cut.py)."""
        from pipeline.ledger.cut import CutCalls, cut_calls

        if not self.released:
            return CutCalls()
        await self.recorder.flush()
        return await asyncio.to_thread(cut_calls, self.engine, self.released, since)

    def retry_budget(self, job_id: str) -> RetryBudget:
        """The job's budget of provider attempts (PIPELINE_MAX_CALL_ATTEMPTS_PER_JOB)."""
        from pipeline.llm.retry import RetryBudget

        budget = self.retry_budgets.get(job_id)
        if budget is None:
            limit = self.client.settings.max_call_attempts_per_job
            budget = self.retry_budgets[job_id] = RetryBudget(limit, self.provider.name)
        return budget

    def job_ended(self, job_id: str) -> None:
        """Forget a finished run's retry budget; a later run of the job starts afresh (the
        queue's max_attempts bounds how many runs there are)."""
        self.retry_budgets.pop(job_id, None)
        if self.tally is not None:
            self.tally.forget(job_id)

    def job_fields(self, job: Job) -> dict[str, Any]:
        """A job's document and cost so far, for the worker's log lines."""
        args = job.args[-1] if job.args and isinstance(job.args[-1], dict) else {}
        cost = self.tally.job_cost(job.id) if self.tally is not None else None
        return {"document": args.get("name"),
                "cost_usd": None if cost is None else format_usd(cost)}  # fmt: skip

    async def aclose(self) -> None:
        await self.provider.aclose()
        await asyncio.to_thread(self.engine.dispose)

    async def call(
        self,
        ctx: JobContext,
        request: LLMRequest,
        *,
        batch_limit_usd: Decimal | None = None,
        document_id: str | None = None,
        accept: Accept | None = None,
        handles: tuple[type[PipelineError], ...] = (),
    ) -> LLMResponse:
        """One LLM call on behalf of a running job: its admission permit, the budgets that
        apply, the ledger. `accept` checks a finished answer (see LLMCaller.call). A failure
        is turned into what it means for the job by `failed_call` (raised from the original
        error), except errors of the types in `handles`, which the task remedies itself
        (e.g. AnswerTruncated: a larger output budget) and which propagate unchanged.
        """
        from pipeline.ledger.batch_limit import current_limit

        # The batch's budget as last set (`pipeline budget --set`) wins over the job's copy.
        limit = await current_limit(self.client.redis, self.client.keys, ctx.batch)
        budget = await self.budget.for_call(
            ctx.batch, limit or batch_limit_usd, job_id=ctx.job_id, lease=ctx.job.token
        )
        try:
            return await self.caller.call(
                request,
                job_id=ctx.job_id,
                batch_id=ctx.batch,
                document_id=document_id,
                permit=ctx.take_permit(),
                budget=budget,
                retry_budget=self.retry_budget(ctx.job_id),
                accept=accept,
            )
        except PipelineError as exc:
            if isinstance(exc, handles):
                raise
            steer = failed_call(exc, ctx.job.attempt, ctx.job.max_attempts, ctx.batch)
            if steer is None:
                raise
            raise steer from exc


def failed_call(exc: PipelineError, attempt: int = 1, max_attempts: int = 1,
                batch: str | None = None) -> JobError | None:  # fmt: skip
    """The paid-call failure policy: what a failed call means for the job that made it.

    The one place this is decided; the job keeps the typed `Reason`, which status, the API and
    the dashboard read (never the message text).
    - A scope stopped after an overrun (a bill above its reservation): the job ends
      `over_budget` for a batch, or waits out the window for the day or month, with reason
      `budget_overrun`, until a person raises the limit.
    - A budget full only of other calls' worst-case holds: postponed a few seconds, attempt
      kept, since those holds usually settle lower (`budget_holds`).
    - The batch budget cannot fit the call: the job ends `over_budget`, nothing charged.
    - The day or month budget cannot fit: postponed until the window turns (`budget_window`).
    - The provider's per-day quota: postponed, attempt kept; the limiter gate keeps every
      worker from claiming that model's jobs until the reset (`daily_quota`).
    - A provider refusal the same request would meet again (a 4xx other than 408/429, or a
      failure marked not retryable), a model without a price, a call over the per-minute
      token limit: failed at once instead of retrying for minutes.
    - Still rate limited, or the provider still failing after the call's own retries: retried
      on the job's schedule (`rate_limit`, `provider_error`).
    - A paid answer that cannot be used: blocked or stopped for SAFETY etc. fails at once
      (`answer_blocked`): the same request meets the same refusal. Truncated or invalid
      answers reach here only when the task's own remedy (a larger output budget, one repair
      call) failed too: failed at once (`answer_truncated`, `answer_invalid`).
    - An answer that was not JSON (HTTP 200, billed, unreadable: `answer_malformed`) is no
      refusal, and one bad answer does not make the next one bad: retried as a counted
      attempt of the job. The job's attempts bound it (analyze_document: 3, so at most two
      more paid answers), so a model or proxy that always garbles stops; the last attempt's
      message says what to check. `attempt`/`max_attempts` are the job's (1-based), `batch`
      its batch id (for the command to run it again).
    - A document the provider cannot read (an InputError such as BadDocument, raised by the
      offline analyzer): failed at once, never retried (`bad_input`).
    Returns None for errors that are not about the call (they propagate unchanged).
    """
    if isinstance(exc, BudgetExceeded):
        if exc.stopped:
            if exc.scope == "batch":
                return OverBudget(str(exc), reason=Reason.BUDGET_OVERRUN)
            delay_s, when = window_wait(exc.scope)
            return Retry(f"{exc}; {when}", delay_s=delay_s, count_attempt=False,
                         reason=Reason.BUDGET_OVERRUN)  # fmt: skip
        if exc.held_only:
            return Retry(
                f"waiting for running calls to settle: {exc}",
                delay_s=HELD_BUDGET_RETRY_S + random.uniform(0, HELD_BUDGET_JITTER_S),
                count_attempt=False,
                reason=Reason.BUDGET_HOLDS,
            )
        if exc.scope == "batch":
            return OverBudget(str(exc))
        delay_s, when = window_wait(exc.scope)
        return Retry(
            f"waiting for the {exc.scope} budget: {exc}; {when}",
            delay_s=delay_s,
            count_attempt=False,
            reason=Reason.BUDGET_WINDOW,
        )
    if isinstance(exc, DailyQuotaExhausted):
        return Retry(str(exc), delay_s=1.0, count_attempt=False, reason=Reason.DAILY_QUOTA)
    if isinstance(exc, ProviderError):
        refused = not exc.retryable or (exc.code is not None and 400 <= exc.code < 500
                                        and exc.code not in (408, 429))  # fmt: skip
        if refused:
            return Permanent(str(exc), reason=Reason.PROVIDER_REFUSED)
        return Retry(f"ProviderError: {exc}", reason=Reason.PROVIDER_ERROR)
    if isinstance(exc, RateLimited):
        return Retry(f"RateLimited: {exc}", reason=Reason.RATE_LIMIT)
    if isinstance(exc, OverLimit | UnknownModel | InputError):
        return Permanent(str(exc), reason=Reason.BAD_INPUT)
    if isinstance(exc, AnswerBlocked):
        return Permanent(str(exc), reason=Reason.ANSWER_BLOCKED)
    if isinstance(exc, AnswerTruncated):
        return Permanent(str(exc), reason=Reason.ANSWER_TRUNCATED)
    if isinstance(exc, AnswerInvalid):
        return Permanent(str(exc), reason=Reason.ANSWER_INVALID)
    if isinstance(exc, AnswerMalformed):
        return Retry(malformed_words(exc, attempt, max_attempts, batch),
                     delay_s=MALFORMED_RETRY_S, reason=Reason.ANSWER_MALFORMED)  # fmt: skip
    return None


def malformed_words(exc: AnswerMalformed, attempt: int, max_attempts: int,
                    batch: str | None = None) -> str:  # fmt: skip
    """What became of an unreadable answer on attempt `attempt` of `max_attempts`: asked
    again, or (none left) what to do."""
    if attempt < max_attempts:
        return (f"{exc}; retried {attempt} of {max_attempts - 1} times (attempt "
                f"{attempt + 1} of {max_attempts} next)")
    return (f"{exc}; that was its last attempt ({attempt} of {max_attempts}): answers that keep "
            "coming back unreadable mean something cuts or garbles them on their way (a proxy "
            "or gateway at the base URL, the network) or the provider is failing; check them, "
            f"then run it again with `pipeline retry {(batch or 'BATCH')[:12]} --failed`")


async def open_services(client: QueueClient, provider: Provider | None = None) -> Services:
    from pipeline.ledger.answers import LedgerAnswers
    from pipeline.ledger.budget import Budget
    from pipeline.ledger.db import get_engine
    from pipeline.ledger.recorder import SqlRecorder
    from pipeline.ledger.spool import LocalSpool
    from pipeline.llm.caller import LLMCaller
    from pipeline.llm.callstore import CallStore
    from pipeline.llm.factory import make_provider
    from pipeline.llm.limiter import Limiter
    from pipeline.llm.pricing import PriceTable
    from pipeline.llm.tally import TallyingRecorder

    s = client.settings
    engine = await asyncio.to_thread(get_engine, s)
    recorder = SqlRecorder(engine, client.redis, client.keys, LocalSpool(s.home / "spool"))
    prices = PriceTable.load()
    limiter = Limiter(client.redis, client.keys, s)
    provider = provider or make_provider(s)
    store = CallStore(client.redis, client.keys, s.call_ttl_s, durable=LedgerAnswers(recorder))
    tally = TallyingRecorder(recorder)
    caller = LLMCaller(provider, limiter, store, tally, prices)
    budget = Budget(client.redis, client.keys, s)
    # The caller's limiter: the shared one, or none for a provider that reaches no one.
    return Services(client, engine, recorder, budget, prices, caller.limiter, provider, caller,
                    tally=tally)  # fmt: skip


def _reconciler(services: Services) -> Any:
    from pipeline.ledger.reconcile import Reconciler

    s = services.client.settings
    return Reconciler(
        services.client.redis, services.client.keys, services.recorder, services.budget,
        services.prices, interval_s=s.reconcile_interval_s, lost_after_s=s.reconcile_interval_s,
    )  # fmt: skip


async def floor_budgets(services: Services) -> None:
    """Raise this key prefix's day, month and batch budgets to the ledger's before the worker
    claims anything. The day and month limits bound the whole ledger's spend, and Redis
    under a prefix knows only what was reserved under it: unfloored, a worker under a fresh
    prefix (or one started within a reconcile interval of an earlier pass, which the pass's
    lock skips) would admit calls past a limit the ledger has reached already. With the
    database or Redis away the periodic pass floors them once it is back (logged)."""
    from redis.exceptions import RedisError
    from sqlalchemy import exc as sa_exc

    from pipeline.ledger.write_behind import is_connection_error

    try:
        await _reconciler(services).rebuild_budgets()
    except (sa_exc.SQLAlchemyError, RedisError) as exc:
        if isinstance(exc, sa_exc.SQLAlchemyError) and not is_connection_error(exc):
            raise
        log.warning("budgets not raised to the ledger's at start (%s unreachable: %s); the "
                    "reconcile pass raises them once it is back",
                    "Redis" if isinstance(exc, RedisError) else "the database", exc)  # fmt: skip


def ledger_hooks(services: Services) -> dict[str, Any]:
    """Queue events the ledger must see: job outcomes, and leases that expired mid-call."""

    from pipeline.ledger.lost_holds import settle_lost_holds

    s = services.client.settings
    reconciler = _reconciler(services)

    async def reconcile() -> None:
        await reconciler.run()

    async def lease_expired(job: Job, outcome: str) -> None:
        # The worker died, perhaps mid-call: its started call rows become `abandoned`
        # (possibly billed) rather than staying `started` forever, and the budget holds of
        # that run are settled now from those rows, not when they would lapse.
        deadline = (
            datetime.fromtimestamp(job.lease_deadline_ms / 1000, UTC)
            if job.lease_deadline_ms
            else None
        )
        # A job that runs again keeps its Batch Mode request waiting in its Gemini batch job
        # (held, not spent): it looks again, and the collect settles it.
        await services.recorder.mark_abandoned(job.id, services.prices, before=deadline,
                                               keep_batch=outcome == "requeued")  # fmt: skip
        if job.token:
            await settle_lost_holds(services.budget, services.recorder, job.id, lease=job.token)
        await services.recorder.update_job_status(
            job.id,
            "queued" if outcome == "requeued" else outcome,
            attempts=job.attempt,
            last_error="lease expired (worker lost)",
        )

    async def job_end(ctx: JobContext, outcome: str, error: str | None) -> None:
        services.job_ended(ctx.job.id)
        if outcome == "release":
            services.released.append(ctx.job.id)
        if outcome not in ("release", "fenced", "lost"):
            status = "queued" if outcome in ("retry", "postpone") else outcome
            # "" clears an earlier attempt's error (a lost lease...) once the job completes.
            last_error = "" if outcome == "complete" else error
            await services.recorder.update_job_status(
                ctx.job.id, status, attempts=ctx.job.attempt, last_error=last_error
            )
        if ctx.job.token:
            # The run is over, so none of its calls holds budget any more. A hold still open
            # is one whose settle never reached Redis (an answer that arrived during a Redis
            # outage): booked now from its ledger row, not when it would lapse. Last, so a
            # Redis still away fails only this (logged by the worker).
            await settle_lost_holds(services.budget, services.recorder, ctx.job.id,
                                    lease=ctx.job.token)  # fmt: skip

    return {
        "on_lease_expired": [lease_expired],
        "on_job_end": [job_end],
        "upkeep": [
            ("ledger-flush", services.recorder.flush, 2.0),
            ("ledger-reconcile", reconcile, s.reconcile_interval_s),
        ],
    }


async def build_worker(
    client: QueueClient,
    *,
    queues: Sequence[str],
    concurrency: int | None,
    burst: bool = False,
    services: Services | None = None,
) -> Worker:
    """A worker for the registered tasks; with services only when a task declares it uses them."""
    s = client.settings
    pool = CpuPool(s.cpu_workers, s.cpu_max_tasks_per_child)
    if services is None and not any(t.uses_services for t in REGISTRY.values()):
        return Worker(client, queues=queues, concurrency=concurrency, burst=burst, pool=pool)
    from pipeline.llm.limiter_gate import LimiterGate
    from pipeline.llm.unmetered import metered
    from pipeline.storage import open_store
    from pipeline.storage.holds import document_hooks

    services = services or await open_services(client)
    await floor_budgets(services)  # before the first claim can reserve against them
    # Claims wait for the limiter only when calls take its quota (not the offline analyzer's).
    gate = LimiterGate(services.limiter) if metered(services.provider) else None
    return Worker(
        client,
        queues=queues,
        concurrency=concurrency,
        burst=burst,
        pool=pool,
        deps={"services": services},
        gate=gate,
        job_fields=services.job_fields,
        **_hooks(ledger_hooks(services), document_hooks(client, open_store(s))),
    )


def _hooks(*sets: dict[str, Any]) -> dict[str, Any]:
    """Worker hook lists from several owners, each list in the order given."""
    merged: dict[str, Any] = {}
    for hooks in sets:
        for name, entries in hooks.items():
            merged.setdefault(name, []).extend(entries)
    return merged
