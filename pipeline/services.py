"""The services a job's paid call goes through, assembled from settings (what a failed call
means for its job is pipeline/failure_policy.py's).

What a process gets here: the queue plus what tasks need (process pool, LLM provider behind
the shared limiter and call store, ledger recorder, budgets) and the hooks that tie queue
events to the ledger.

Kept apart from the queue core so the queue knows nothing of LLMs or SQL. Workers, the CLI
(`run`, `submit --wait`) and the HTTP API all build their services here, the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pipeline.errors import PipelineError
from pipeline.failure_policy import failed_call
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
