"""Prometheus metrics computed at scrape time from Redis and the ledger.

The API process runs no jobs, so in-process counters would only ever read zero: every
figure is read fresh from the shared state on each scrape instead — the queue from Redis,
the money from the ledger — and so agrees with `pipeline status` and `pipeline costs`
whichever process serves it. Counting jobs by state walks the job hashes with SCAN
(bounded by `max_jobs_scanned`), which is cheap at the tens of thousands of jobs a
document pipeline keeps within its result TTL.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from pipeline.ledger.db import session_factory
from pipeline.ledger.models import LLMCall
from pipeline.ledger.report import held_usd
from pipeline.llm.attempts import Outcome
from pipeline.llm.counters import LimiterCounters, LimiterSnapshot
from pipeline.money import to_decimal
from pipeline.queue.client import QueueClient
from pipeline.queue.stats import Stats, StatsSnapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_SCAN_BATCH = 500


@dataclass
class Snapshot:
    jobs: Counter[tuple[str, str]] = field(default_factory=Counter)  # (queue, state) -> n
    jobs_scan_truncated: bool = False
    depths: dict[str, int] = field(default_factory=dict)  # queue -> ready jobs
    delayed: int = 0
    active: int = 0
    dead: int = 0
    workers: int = 0
    worker_slots: int = 0
    worker_slots_used: int = 0
    # (model, outcome) -> {"calls", "input_tokens", ..., "cost_usd"}
    llm: dict[tuple[str, str, str], dict[str, float]] = field(default_factory=dict)
    stats: StatsSnapshot = field(default_factory=StatsSnapshot)
    limiter_counts: LimiterSnapshot = field(default_factory=LimiterSnapshot)
    # scope (day, month) -> (spent, reserved, limit or None), USD
    budgets: dict[str, tuple[float, float, float | None]] = field(default_factory=dict)
    limiter: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> Limiter.state
    # (batch id, document state) -> documents, for the newest batches (tasks/status.py's states)
    documents: Counter[tuple[str, str]] = field(default_factory=Counter)


async def _count_jobs(client: QueueClient, snap: Snapshot, max_jobs_scanned: int) -> None:
    match = client.keys.job("*")
    seen = 0
    batch: list[str] = []

    async def flush() -> None:
        async with client.redis.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.hmget(key, "queue", "state")
            for queue, state in await pipe.execute():
                if state:
                    snap.jobs[(queue or "default", state)] += 1
        batch.clear()

    async for key in client.redis.scan_iter(match=match, count=_SCAN_BATCH, _type="HASH"):
        if seen >= max_jobs_scanned:
            snap.jobs_scan_truncated = True
            break
        seen += 1
        batch.append(key)
        if len(batch) >= _SCAN_BATCH:
            await flush()
    if batch:
        await flush()



def sample(amount: Decimal) -> float:
    """Prometheus samples are floats: money stays Decimal up to this exposition boundary."""
    return float(amount)

def _ledger_totals(engine: Engine) -> dict[tuple[str, str, str], dict[str, float]]:
    """(model, outcome, provider) -> calls, tokens and dollars. A row without a provider
    (written before migration 0006) is Gemini's, the one that may have billed it. A call
    in flight (`started`) is held, not booked: its worst case is `held_usd`, and `cost_usd`
    stays 0 for it, so summing the cost over every outcome never counts money not spent."""
    model = func.coalesce(LLMCall.model_version, LLMCall.model)
    provider = func.coalesce(func.nullif(LLMCall.provider, ""), "gemini")
    stmt = select(
        model,
        LLMCall.outcome,
        provider,
        func.count(),
        func.coalesce(func.sum(LLMCall.input_tokens), 0),
        func.coalesce(func.sum(LLMCall.output_tokens), 0),
        func.coalesce(func.sum(LLMCall.thinking_tokens), 0),
        func.coalesce(func.sum(LLMCall.cached_tokens), 0),
        func.coalesce(func.sum(LLMCall.cost_usd), 0),
        # what report.held_usd holds for a row in flight: its worst case, else its bound
        func.coalesce(func.sum(func.coalesce(func.nullif(LLMCall.cost_usd, 0),
                                             LLMCall.estimated_cost_usd)), 0),
    ).group_by(model, LLMCall.outcome, provider)
    out: dict[tuple[str, str, str], dict[str, float]] = {}
    with session_factory(engine)() as session:
        for name, outcome, who, calls, inp, outp, think, cached, cost, bound in session.execute(
            stmt
        ):
            started = outcome == Outcome.STARTED.value
            out[(str(name), str(outcome), str(who))] = {
                "calls": int(calls),
                "input": int(inp),
                "output": int(outp),
                "thinking": int(think),
                "cached": int(cached),
                # Prometheus samples are floats; the ledger keeps the exact Decimal.
                "cost_usd": 0.0 if started else sample(to_decimal(cost)),
                "held_usd": sample(held_usd(outcome, to_decimal(bound), None)),
            }
    return out


async def snapshot(
    client: QueueClient, engine: Engine, *, max_jobs_scanned: int = 200_000
) -> Snapshot:
    snap = Snapshot()
    depths = await client.depths()
    snap.depths = {name: int(q["ready"]) for name, q in depths["queues"].items()}
    snap.delayed, snap.active, snap.dead = depths["delayed"], depths["active"], depths["dead"]
    workers = await client.workers()
    snap.workers = len(workers)
    snap.worker_slots = sum(int(w.get("concurrency", 0)) for w in workers)
    snap.worker_slots_used = sum(int(w.get("slots_used", 0)) for w in workers)
    await _count_jobs(client, snap, max_jobs_scanned)
    snap.llm = await asyncio.to_thread(_ledger_totals, engine)
    snap.stats = await Stats(client.redis, client.keys).read()
    snap.limiter_counts = await LimiterCounters(client.redis, client.keys).read()
    snap.budgets = await _budgets(client, engine)
    snap.limiter = await limiter_states(client)
    snap.documents = await _document_states(client, engine)
    return snap


RECENT_BATCHES = 10


async def _document_states(client: QueueClient, engine: Engine) -> Counter[tuple[str, str]]:
    """Documents by state in the newest batches, derived as `pipeline status BATCH` does."""
    from tasks.batches import batch_view, recent_batches

    out: Counter[tuple[str, str]] = Counter()
    for entry in await asyncio.to_thread(recent_batches, engine, RECENT_BATCHES):
        view = await batch_view(client, engine, entry["batch_id"])
        for state, n in view.by_state.items():
            out[(view.facts.batch_id, state)] += n
    return out


async def _budgets(
    client: QueueClient, engine: Engine
) -> dict[str, tuple[float, float, float | None]]:
    from pipeline.ledger.budget import Budget
    from pipeline.ledger.windows import shown_budgets

    status = await shown_budgets(Budget(client.redis, client.keys, client.settings), engine)
    return {
        scope: (
            sample(st.spent_usd),
            sample(st.reserved_usd),
            None if st.limit_usd is None else sample(st.limit_usd),
        )
        for scope, st in status.items()
    }


async def limiter_models(client: QueueClient) -> list[str]:
    """Models the shared bucket knows: the default, any configured, any with a bucket."""
    from pipeline.llm.bucket import bucket_models

    s = client.settings
    return sorted({s.model, *s.limits, *await bucket_models(client.redis, client.keys)})


async def limiter_states(client: QueueClient) -> dict[str, dict[str, Any]]:
    """`Limiter.state` for every known model, for the dashboard and the gauges."""
    from pipeline.llm.limiter import Limiter

    limiter = Limiter(client.redis, client.keys, client.settings)
    return {m: await limiter.state(m) for m in await limiter_models(client)}


class _SnapshotCollector(Collector):
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        s = self.snap
        jobs = GaugeMetricFamily(
            "pipeline_jobs", "Jobs in Redis by queue and state (records live until their TTL).",
            labels=["queue", "state"],
        )  # fmt: skip
        for (queue, state), n in sorted(s.jobs.items()):
            jobs.add_metric([queue, state], n)
        yield jobs
        yield GaugeMetricFamily(
            "pipeline_jobs_scan_truncated",
            "1 when pipeline_jobs stopped counting at its scan limit.",
            value=int(s.jobs_scan_truncated),
        )
        depth = GaugeMetricFamily(
            "pipeline_queue_depth", "Jobs ready to run, per queue.", labels=["queue"]
        )
        for queue, n in sorted(s.depths.items()):
            depth.add_metric([queue], n)
        yield depth
        yield GaugeMetricFamily(
            "pipeline_delayed_jobs", "Jobs waiting for a delay or retry back-off.", value=s.delayed
        )
        yield GaugeMetricFamily("pipeline_active_jobs", "Jobs leased to a worker.", value=s.active)
        yield GaugeMetricFamily(
            "pipeline_dead_letter_jobs", "Jobs in the dead-letter set.", value=s.dead
        )
        yield GaugeMetricFamily(
            "pipeline_workers_alive", "Workers with a recent heartbeat.", value=s.workers
        )
        yield GaugeMetricFamily(
            "pipeline_worker_slots", "Job slots of the live workers.", value=s.worker_slots
        )
        yield GaugeMetricFamily(
            "pipeline_worker_slots_used", "Busy job slots.", value=s.worker_slots_used
        )
        documents = GaugeMetricFamily(
            "pipeline_documents", "Documents of the newest batches by state (queued, running, "
            "waiting, complete, failed, over_budget, cancelled), as `pipeline status` shows.",
            labels=["batch", "state"],
        )  # fmt: skip
        for (batch, state), n in sorted(s.documents.items()):
            documents.add_metric([batch, state], n)
        yield documents
        yield from self._llm()
        yield from self._queue_events()
        yield from self._limiter()
        yield from self._budget()

    def _queue_events(self) -> Iterator[Metric]:
        st = self.snap.stats
        expired = CounterMetricFamily(
            "pipeline_lease_expiries", "Leases that ran out (worker died or lost Redis), by "
            "what became of the job.", labels=["queue", "outcome"],
        )  # fmt: skip
        for (queue, outcome), n in sorted(st.lease_expired.items()):
            expired.add_metric([queue, outcome], n)
        yield expired
        fenced = CounterMetricFamily(
            "pipeline_fenced_completions", "Settlements refused because the worker's fencing "
            "token was stale (another worker owned the job).", labels=["queue", "task"],
        )  # fmt: skip
        for (queue, task), n in sorted(st.fenced.items()):
            fenced.add_metric([queue, task], n)
        yield fenced
        settled = CounterMetricFamily(
            "pipeline_job_attempts", "Attempts settled by workers, by outcome.",
            labels=["queue", "task", "outcome"],
        )  # fmt: skip
        for (queue, task, outcome), n in sorted(st.settled.items()):
            settled.add_metric([queue, task, outcome], n)
        yield settled
        durations = HistogramMetricFamily(
            "pipeline_job_duration_seconds", "How long settled attempts ran, by task.",
            labels=["task"],
        )  # fmt: skip
        for task, h in sorted(st.durations.items()):
            durations.add_metric([task], list(h.buckets.items()), h.sum_s)
        yield durations

    def _limiter(self) -> Iterator[Metric]:
        st = self.snap.limiter_counts
        r429 = CounterMetricFamily(
            "pipeline_limiter_429", "429s from the provider, per model (kind: minute or day).",
            labels=["model", "kind"],
        )  # fmt: skip
        for (model, kind), n in sorted(st.limiter_429.items()):
            r429.add_metric([model, kind], n)
        yield r429
        refused = CounterMetricFamily(
            "pipeline_limiter_refusals", "Times the shared bucket said 'not yet', by reason.",
            labels=["model", "reason"],
        )  # fmt: skip
        for (model, reason), n in sorted(st.limiter_refusals.items()):
            refused.add_metric([model, reason], n)
        yield refused
        wait = CounterMetricFamily(
            "pipeline_limiter_wait_seconds", "Seconds callers and workers were held back by "
            "the shared bucket (summed over workers).", labels=["model"],
        )  # fmt: skip
        for model, seconds in sorted(st.limiter_wait_s.items()):
            wait.add_metric([model], seconds)
        yield wait
        tokens = GaugeMetricFamily(
            "pipeline_limiter_tokens_left", "Input tokens in the bucket now.", labels=["model"]
        )
        requests = GaugeMetricFamily(
            "pipeline_limiter_requests_left", "Requests in the bucket now.", labels=["model"]
        )
        paused = GaugeMetricFamily(
            "pipeline_limiter_paused", "1 while a 429 pause or the daily quota holds the model.",
            labels=["model"],
        )  # fmt: skip
        for model, state in sorted(self.snap.limiter.items()):
            tokens.add_metric([model], state["tokens_left"])
            requests.add_metric([model], state["requests_left"])
            held = state["paused_until"] or state["daily_exhausted_until"]
            paused.add_metric([model], 1 if held else 0)
        yield tokens
        yield requests
        yield paused

    def _budget(self) -> Iterator[Metric]:
        spent = GaugeMetricFamily(
            "pipeline_budget_spent_usd", "Spent in the current budget window.", labels=["scope"]
        )
        remaining = GaugeMetricFamily(
            "pipeline_budget_remaining_usd", "Limit minus spent and reserved, for scopes with a "
            "limit (PIPELINE_BUDGET_DAY_USD, PIPELINE_BUDGET_MONTH_USD).", labels=["scope"],
        )  # fmt: skip
        for scope, (spent_usd, reserved_usd, limit) in sorted(self.snap.budgets.items()):
            spent.add_metric([scope], spent_usd)
            if limit is not None:
                remaining.add_metric([scope], limit - spent_usd - reserved_usd)
        yield spent
        yield remaining

    def _llm(self) -> Iterator[Metric]:
        labels = ["model", "outcome", "provider"]
        calls = CounterMetricFamily(
            "pipeline_llm_calls", "LLM call attempts in the ledger, by who answered them.",
            labels=labels,
        )  # fmt: skip
        tokens = CounterMetricFamily(
            "pipeline_llm_tokens", "Tokens of LLM calls in the ledger.", labels=[*labels, "kind"]
        )
        cost = CounterMetricFamily(
            "pipeline_llm_cost_usd",
            "Dollars booked for LLM calls, from the ledger: provider gemini's are billed by "
            "Google, emulator's are priced as Gemini bills them and never billed, offline's "
            "are 0. Calls in flight (outcome started) are in pipeline_llm_held_usd instead.",
            labels=labels,
        )
        held = GaugeMetricFamily(
            "pipeline_llm_held_usd",
            "Worst case held against budgets by LLM calls in flight (not spent yet).",
            labels=["model", "provider"],
        )
        for (model, outcome, provider), row in sorted(self.snap.llm.items()):
            calls.add_metric([model, outcome, provider], row["calls"])
            for kind in ("input", "output", "thinking", "cached"):
                tokens.add_metric([model, outcome, provider, kind], row[kind])
            cost.add_metric([model, outcome, provider], row["cost_usd"])
            if row["held_usd"]:
                held.add_metric([model, provider], row["held_usd"])
        yield calls
        yield tokens
        yield cost
        yield held


def render(snap: Snapshot) -> bytes:
    """The Prometheus text exposition of one snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snap))
    data: bytes = generate_latest(registry)
    return data


async def scrape(client: QueueClient, engine: Engine, **kwargs: Any) -> bytes:
    return render(await snapshot(client, engine, **kwargs))
