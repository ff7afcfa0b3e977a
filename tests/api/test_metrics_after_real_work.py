"""`GET /metrics` after real work: jobs settled, a lease that expired under a stalled worker
process, that process's refused (fenced) completion, durations by task, LLM calls from the
ledger, the limiter's 429s and waits, and the day budget. The counters live in Redis, so the
ones a killed worker wrote are still there when a fresh API process scrapes."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from pipeline.llm.limiter import Limiter
from pipeline.queue import QueueClient
from pipeline.queue.stats import Stats
from pipeline.redis.connection import connect_redis
from pipeline.services import build_worker
from pipeline.settings import Settings
from tests.support import llm_tasks, metrics_tasks
from tests.support.api import api_client, api_settings
from tests.support.waiting import eventually
from tests.support.workers import WorkerProcess

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(settings: Settings) -> Samples:
    async with api_client(settings) as (client, _):
        r = await client.get("/metrics")
    assert r.status_code == 200, r.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


async def test_metrics_count_real_work(
    tmp_path: Path, redis_url: str, key_prefix: str, aredis: object
) -> None:
    # The in-process worker's leases are long: only the stopped process may lose one (the
    # counts below are exact); at FAST's 0.5 s, a test process starved for that long beside
    # burners lost m.broken's lease too (a second expiry and a second fenced completion).
    settings = api_settings(tmp_path, redis_url, key_prefix, budget_day_usd="5", min_lease_s=5)
    qc = QueueClient(connect_redis(redis_url), settings=settings)
    k = qc.keys
    stalled = WorkerProcess(
        redis_url, key_prefix, "--concurrency", "1",
        imports=("tests.support.metrics_tasks",),
        PIPELINE_HOME=str(tmp_path / "home"),
        PIPELINE_DATABASE_URL=settings.database_url or "",
        PIPELINE_PROVIDER="offline",
    )  # fmt: skip
    run: asyncio.Task[None] | None = None
    try:
        stall = await qc.enqueue(metrics_tasks.stall, "wake")
        # `blocking`, not `started`: stopped while still at its await, the attempt would be
        # cancelled by its lost lease on waking (settled `lost`), with nothing to refuse
        await eventually(
            lambda: qc.redis.exists(k.custom("m", "blocking", "1")), 60, "the stalled attempt"
        )
        # Leases are renewed from a thread a blocked loop cannot stop (issue 14), so a worker
        # really loses its job only when the whole process stops: a VM pause, a SIGSTOP.
        stalled.signal(signal.SIGSTOP)
        # The second worker: in this process, with the ledger hooks and the limiter gate.
        worker = await build_worker(qc, queues=["default"], concurrency=3)
        run = asyncio.create_task(worker.run(install_signals=False))
        assert await stall.result(timeout_s=30) == "attempt 2"
        works = [await qc.enqueue(metrics_tasks.work, i, 0.05) for i in range(3)]
        broken = await qc.enqueue(metrics_tasks.broken, "always")
        asks = [await qc.enqueue(llm_tasks.ask, f"question {i}") for i in range(2)]
        for handle in [*works, *asks]:
            await handle.result(timeout_s=30)
        assert (await qc.wait(broken.id, 30)).state.value == "dead"
        # Wake the stalled process: its completion must be refused, and counted.
        await qc.redis.set(k.custom("m", "flag", "wake"), 1)
        stalled.signal(signal.SIGCONT)
        stats = Stats(qc.redis, k)
        await eventually(lambda: _fenced(stats), 30, "the fenced completion")
        await eventually(lambda: _ledger_has(settings, 2), 30, "the LLM calls reaching the ledger")
    finally:
        stalled.signal(signal.SIGCONT)
        stalled.close()  # killed: whatever it counted must survive it
        if run is not None:
            worker.stop()
            await asyncio.wait_for(run, 30)
    limiter = Limiter(qc.redis, k, settings)
    await limiter.on_rate_limited("gemini-2.0-flash", retry_delay_s=0.3)
    permit = await limiter.acquire("gemini-2.0-flash", 10, deadline_s=10)  # waits out the pause
    await limiter.release(permit)
    await qc.aclose()

    m = await scrape(settings)
    assert v(m, "pipeline_lease_expiries_total", outcome="requeued", queue="default") == 1
    assert v(m, "pipeline_fenced_completions_total", queue="default", task="m.stall") == 1
    settled = "pipeline_job_attempts_total"
    assert v(m, settled, outcome="complete", queue="default", task="m.work") == 3
    assert v(m, settled, outcome="retry", queue="default", task="m.broken") == 1
    assert v(m, settled, outcome="dead", queue="default", task="m.broken") == 1
    assert v(m, settled, outcome="complete", queue="default", task="m.stall") == 1
    hist = "pipeline_job_duration_seconds"
    assert v(m, hist + "_count", task="m.work") == 3
    assert v(m, hist + "_bucket", le="+Inf", task="m.work") == 3
    assert v(m, hist + "_count", task="m.broken") == 2
    assert v(m, hist + "_sum", task="m.work") >= 0.15  # three sleeps of 0.05 s
    assert v(m, "pipeline_dead_letter_jobs") == 1
    calls = {key: v for key, v in m.items() if key[0] == "pipeline_llm_calls_total"}
    assert sum(calls.values()) == 2, calls
    tokens = [v for key, v in m.items() if key[0] == "pipeline_llm_tokens_total"
              and ("kind", "input") in key[1]]  # fmt: skip
    assert sum(tokens) > 0
    assert v(m, "pipeline_limiter_429_total", kind="minute", model="gemini-2.0-flash") == 1
    assert v(m, "pipeline_limiter_refusals_total", model="gemini-2.0-flash", reason="paused") >= 1
    assert v(m, "pipeline_limiter_wait_seconds_total", model="gemini-2.0-flash") > 0
    assert v(m, "pipeline_limiter_tokens_left", model="gemini-2.0-flash") >= 0
    assert v(m, "pipeline_budget_remaining_usd", scope="day") == 5.0  # offline calls cost $0
    assert ("pipeline_budget_remaining_usd", (("scope", "month"),)) not in m  # no month limit


def v(m: Samples, name: str, **labels: str) -> float:
    return m[(name, tuple(sorted(labels.items())))]


async def _fenced(stats: Stats) -> bool:
    return sum((await stats.read()).fenced.values()) == 1


async def _ledger_has(settings: Settings, calls: int) -> bool:
    from sqlalchemy import func, select

    from pipeline.ledger.db import get_engine, session_factory
    from pipeline.ledger.models import LLMCall

    def count() -> int:
        engine = get_engine(settings)
        try:
            with session_factory(engine)() as session:
                return int(session.scalar(select(func.count()).select_from(LLMCall)) or 0)
        finally:
            engine.dispose()

    return await asyncio.to_thread(count) >= calls
