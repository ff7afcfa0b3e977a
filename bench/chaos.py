"""Chaos run: documents through four workers while workers, Redis and the database fail.

    python bench/chaos.py [--documents 200] [--workers 4] [--seed 6] [--timeout-s 900]
                          [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]

The run (bounded in time and size, everything on 127.0.0.1): the embedded Redis under a
temporary home, a fresh PostgreSQL database `chaos_<random>` reached through a TCP proxy,
the Gemini emulator (2-8 s latency, 2 % injected 503s, a request quota below what four
workers would send), and `pipeline worker` processes. Documents (the examples plus
generated ones, all different) go in through `submit_uploads` with a batch budget. While
they run: every few seconds a random worker is SIGKILLed and replaced; the embedded Redis
is shut down and started again once (its append-only file brings the queue back); the
database is cut once (proxy closed, every connection aborted) and restored.

Two heavier Redis faults replace the quick restart on request: `--redis-outage-s N` keeps
Redis down for N seconds (longer than the workers' own retries and the jobs' leases: the
answers that arrive meanwhile must be kept, not paid again), and `--redis-wipe` deletes its
data while it is down (the ledger is then the book of record: budgets are rebuilt from it
and the documents Redis forgot must end `lost` in the ledger, with the reason).

At the end it prints and checks: documents lost 0, completed twice 0, every ledger `ok`
row matched to an emulator bill, every bill the ledger missed covered by an `abandoned`
row (workers killed mid-call), emulator repeats no more than abandoned rows, and the batch
budget never exceeded. Figures go to bench/results/chaos.json; the exit status is 1 when
a check fails. Randomness is seeded; every wait is a condition with a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

if __name__ == "__main__":
    # Import from the checkout, and keep bench/ itself off the path so nothing in it
    # shadows a module (not when imported: the importer's path is its own business).
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import httpx
from sqlalchemy.engine import make_url

from bench.chaos_checks import Evidence, check, read_ledger, read_queue
from bench.chaos_env import (
    BillLog,
    Workers,
    emulator_in_thread,
    fresh_database,
    make_documents,
)
from tests.support.backends import TcpProxy

PREFIX = "chaos"
API_KEY = "chaos-key"


@dataclass
class ChaosConfig:
    documents: int = 200
    workers: int = 4
    concurrency: int = 8  # job slots per worker
    latency_s: tuple[float, float] = (2.0, 8.0)
    fail_rate: float = 0.02  # injected 503s
    quota_requests: int = 30  # emulator requests per quota window (and the limiter's rpm)
    quota_window_s: float = 10.0
    expected_duration_s: float = 10.0  # per job: the lease is twice this
    first_kill_s: float = 6.0
    kill_every_s: float = 5.0
    kills: int = 16
    redis_restart_at_s: float = 22.0
    redis_outage_s: float = 0.0  # how long Redis stays down at the restart (0: back at once)
    redis_wipe: bool = False  # delete Redis's data while it is down (data loss)
    # The restart also waits for this many answers billed: a fault meant to land mid-run
    # must not land before the first call on a slow machine.
    redis_restart_after_bills: int = 0
    db_cut_at_s: float = 40.0
    db_cut_s: float = 10.0
    budget_usd: Decimal = Decimal("5")
    timeout_s: float = 900.0  # the whole run, chaos and drain
    seed: int = 6
    postgres_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    model: str | None = None  # default: the settings' model


@dataclass
class Timeline:
    kills: list[dict[str, Any]] = field(default_factory=list)
    redis_restart: dict[str, float] = field(default_factory=dict)
    db_cut: dict[str, float] = field(default_factory=dict)
    submit_s: float = 0.0
    all_terminal_s: float | None = None


def _worker_env(cfg: ChaosConfig, home: Path, redis_url: str, db_url: str,
                emulator_url: str) -> dict[str, str]:  # fmt: skip
    return {
        "PIPELINE_HOME": str(home),
        "PIPELINE_REDIS_URL": redis_url,
        "PIPELINE_KEY_PREFIX": PREFIX,
        "PIPELINE_DATABASE_URL": db_url,
        "PIPELINE_PROVIDER": "emulator",
        "GOOGLE_GEMINI_BASE_URL": emulator_url,
        "GEMINI_API_KEY": API_KEY,
        "GOOGLE_API_KEY": "",  # it would win over GEMINI_API_KEY in the SDK
        "PIPELINE_RPM": str(cfg.quota_requests),
        "PIPELINE_LIMIT_PERIOD_S": str(cfg.quota_window_s),
        "PIPELINE_SWEEP_INTERVAL_S": "0.5",
        "PIPELINE_HEARTBEAT_INTERVAL_S": "1.0",
        "PIPELINE_SHUTDOWN_GRACE_S": "5",
        "PIPELINE_CPU_WORKERS": "1",
        "PIPELINE_RECONCILE_INTERVAL_S": "5",
    }


def _ledger_jobs(database_url: str, job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """Job id -> (status, last_error) as the ledger has them."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from pipeline.ledger.db import create_ledger_engine
    from pipeline.ledger.models import JobRow

    engine = create_ledger_engine(database_url, upgrade=False)
    try:
        with Session(engine) as session:
            rows = session.execute(select(JobRow.id, JobRow.status, JobRow.last_error)
                                   .where(JobRow.id.in_(job_ids))).all()  # fmt: skip
    finally:
        engine.dispose()
    return {r[0]: (r[1], r[2] or "") for r in rows}


async def _unfinished(client: Any, job_ids: list[str], database_url: str) -> int:
    """Jobs neither terminal in Redis nor, when Redis forgot them, settled by the ledger
    (marked lost with the reason, or complete)."""
    async with client.redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hget(client.keys.job(job_id), "state")
        states = await pipe.execute()
    done = {"complete", "failed", "dead", "cancelled", "over_budget"}
    forgotten = [i for i, s in zip(job_ids, states, strict=True) if s is None]
    ledger = await asyncio.to_thread(_ledger_jobs, database_url, forgotten) if forgotten else {}
    settled = sum(ledger.get(i, ("", ""))[0] in ("lost", "complete") for i in forgotten)
    return sum(s not in done for s in states) - settled


async def _busy_pids(client: Any) -> set[int]:
    """Pids of workers whose last heartbeat lists running jobs."""
    try:
        beats = await client.workers()
    except Exception:  # Redis restarting: any worker will do
        return set()
    return {int(b["pid"]) for b in beats if b.get("jobs") and b.get("pid")}


def _wipe(redis: Any) -> None:
    """Delete the embedded Redis's data files (it is stopped): what a restore, a disk swap
    or a server without persistence does to the queue."""
    for name in ("appendonlydir", "appendonly.aof", "dump.rdb"):
        path = redis.dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


async def _chaos(cfg: ChaosConfig, redis: Any, proxy: TcpProxy, workers: Workers,
                 client: Any, job_ids: list[str], timeline: Timeline,
                 database_url: str, bills: BillLog) -> None:  # fmt: skip
    """Run the scheduled faults, replacing exited workers, until every fault has happened
    and every job is terminal, or the run's deadline passes."""
    rng = random.Random(cfg.seed)
    t0 = time.monotonic()
    kill_at = [cfg.first_kill_s + i * cfg.kill_every_s for i in range(cfg.kills)]
    restart_due, cut_due, restore_at, redis_back_at = True, True, None, None
    deadline = t0 + cfg.timeout_s
    next_check = 0.0
    while time.monotonic() < deadline:
        now = time.monotonic() - t0
        if kill_at and now >= kill_at[0]:
            kill_at.pop(0)
            try:
                busy = await asyncio.wait_for(_busy_pids(client), 3.0)
            except TimeoutError:
                busy = set()
            pid = workers.kill_random(rng, busy)
            timeline.kills.append({"at_s": round(now, 2), "pid": pid or 0})
        if (restart_due and now >= cfg.redis_restart_at_s
                and len(bills.snapshot()) >= cfg.redis_restart_after_bills):
            restart_due = False
            await asyncio.to_thread(redis.stop)
            if cfg.redis_wipe:
                await asyncio.to_thread(_wipe, redis)
            redis_back_at = now + cfg.redis_outage_s
            timeline.redis_restart = {"at_s": round(now, 2), "wiped": cfg.redis_wipe}
        if redis_back_at is not None and now >= redis_back_at:
            redis_back_at = None
            await asyncio.to_thread(redis.start)
            down_s = time.monotonic() - t0 - timeline.redis_restart["at_s"]
            timeline.redis_restart["down_s"] = round(down_s, 2)
        if cut_due and now >= cfg.db_cut_at_s:
            cut_due = False
            await proxy.stop()
            restore_at = now + cfg.db_cut_s
            timeline.db_cut = {"at_s": round(now, 2), "for_s": cfg.db_cut_s}
        if restore_at is not None and now >= restore_at:
            await proxy.start()
            restore_at = None
        if restore_at is None and redis_back_at is None:
            # A worker started while a service was down may exit; a supervisor restarts it.
            workers.replace_exited()
        faults_left = (kill_at or restart_due or cut_due or restore_at is not None
                       or redis_back_at is not None)  # fmt: skip
        if now >= next_check:
            next_check = now + 1.0
            try:
                # bounded: while Redis is down the client's own retries would hold up the
                # schedule of the other faults for half a minute
                left = await asyncio.wait_for(_unfinished(client, job_ids, database_url), 3.0)
            except Exception:  # Redis restarting: look again next tick
                left = -1
            if left == 0 and timeline.all_terminal_s is None:
                timeline.all_terminal_s = round(now, 2)
            if left == 0 and not faults_left:
                return
        await asyncio.sleep(0.1)


async def _settled(client: Any, database_url: str, batch_id: str, timeout_s: float) -> None:
    """Wait for the ledger buffer to drain and for no call of the batch to be `started`."""
    from pipeline.ledger.buffer import LedgerBuffer

    buffer = LedgerBuffer(client.redis, client.keys)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await buffer.length() == 0:
            calls, _ = await asyncio.to_thread(read_ledger, database_url, batch_id)
            if not any(c["outcome"] == "started" for c in calls):
                return
        await asyncio.sleep(0.5)


async def run_chaos(cfg: ChaosConfig, log_dir: Path | None = None) -> dict[str, Any]:
    """The whole run; returns the report (its "failures" list is empty when all checks hold)."""
    from pipeline.queue.client import QueueClient
    from pipeline.redis.connection import connect_redis
    from pipeline.redis.keys import Keys
    from pipeline.redis.server import EmbeddedRedis
    from pipeline.settings import load_settings
    from tasks.submission import Upload, submit_uploads

    tmp = Path(tempfile.mkdtemp(prefix="pipeline-chaos-"))
    log_dir = log_dir or tmp / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    home = tmp / "home"
    docs = await asyncio.to_thread(make_documents, cfg.documents, cfg.seed)
    redis = EmbeddedRedis(home)
    redis_url = await asyncio.to_thread(redis.start)
    timeline = Timeline()
    keep_logs = True  # until the run has passed: the worker logs explain a failure
    workers: Workers | None = None
    client: QueueClient | None = None
    try:
        with fresh_database(cfg.postgres_url) as direct_url, emulator_in_thread(
            api_keys=(API_KEY,), latency_s=cfg.latency_s, fail_rate=cfg.fail_rate,
            fail_codes=(503,), rpm=cfg.quota_requests, window_s=cfg.quota_window_s,
            seed=cfg.seed,
        ) as (emulator_url, bills):  # fmt: skip
            target = make_url(direct_url)
            proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
            await proxy.start()
            proxied = target.set(host="127.0.0.1", port=proxy.port)
            proxied_url = proxied.render_as_string(hide_password=False)
            env = _worker_env(cfg, home, redis_url, proxied_url, emulator_url)
            settings = load_settings(home=home, redis_url=redis_url, database_url=proxied_url,
                                     key_prefix=PREFIX, provider="emulator")  # fmt: skip
            client = QueueClient(connect_redis(redis_url), Keys(PREFIX), settings)
            workers = Workers(env, cfg.concurrency, log_dir)
            for _ in range(cfg.workers):
                workers.spawn()
            t_submit = time.monotonic()
            submission = await submit_uploads(
                client, [Upload(name, data) for name, data in docs], model=cfg.model,
                budget_usd=cfg.budget_usd, label="chaos",
                expected_duration_s=cfg.expected_duration_s,
            )  # fmt: skip
            timeline.submit_s = round(time.monotonic() - t_submit, 2)
            job_docs = {d.job_id: d.document_id or "" for d in submission.documents
                        if d.job_id and d.status == "queued"}  # fmt: skip
            skipped = [d.name for d in submission.documents if d.status != "queued"]
            await _chaos(cfg, redis, proxy, workers, client, list(job_docs), timeline,
                         direct_url, bills)  # fmt: skip
            await _settled(client, direct_url, submission.batch_id, timeout_s=60)
            workers.stop()
            stats = (await asyncio.to_thread(httpx.get, f"{emulator_url}/_emulator/stats",
                                             timeout=30)).json()  # fmt: skip
            jobs, completes = await read_queue(client, job_docs)
            forgotten = [i for i, j in jobs.items() if j["state"] == "missing"]
            ledger_jobs = await asyncio.to_thread(_ledger_jobs, direct_url, forgotten)
            for job_id in forgotten:  # Redis lost them: the ledger's word is final
                status, error = ledger_jobs.get(job_id, ("missing", ""))
                jobs[job_id].update(state=status, error=error)
            calls, results = await asyncio.to_thread(read_ledger, direct_url,
                                                     submission.batch_id)  # fmt: skip
            await proxy.stop()
            evidence = Evidence(jobs, completes, calls, results, bills.snapshot(), stats)
            report = check(evidence, cfg.budget_usd)
            report["skipped_at_submit"] = skipped
            if skipped:
                report["failures"].append(f"{len(skipped)} documents refused at submit")
            for what, happened in (("redis restart", timeline.redis_restart),
                                   ("database cut", timeline.db_cut),
                                   ("worker kill", timeline.kills)):  # fmt: skip
                if not happened:
                    report["failures"].append(f"the {what} did not happen before the deadline")
            report["workers"] = {"started": workers.started, "killed": workers.killed,
                                 "exited_by_themselves": workers.exited}  # fmt: skip
            report["timeline"] = asdict(timeline)
            report["config"] = {k: (str(v) if isinstance(v, Decimal) else v)
                                for k, v in asdict(cfg).items()}  # fmt: skip
            report["logs"] = str(log_dir)
            if report["failures"]:
                report["worker_log_tails"] = workers.log_tails()
            else:
                keep_logs = False
                report["logs"] = None
            return report
    finally:
        if workers is not None:
            workers.stop()
        if client is not None:
            await client.aclose()
        await asyncio.to_thread(redis.stop)
        shutil.rmtree(home, ignore_errors=True)
        if not keep_logs:
            shutil.rmtree(tmp, ignore_errors=True)


def print_report(report: dict[str, Any]) -> None:
    e, ok, lost = report["emulator"], report["ledger_ok"], report["billed_to_killed_workers"]
    t = report["timeline"]
    print(f"documents {report['documents']}: {report['job_states']}")
    print(f"faults: {len(t['kills'])} workers SIGKILLed, Redis restart {t['redis_restart']}, "
          f"database cut {t['db_cut']}; all terminal at {t['all_terminal_s']} s")  # fmt: skip
    print(f"documents lost: {report['documents_lost']}   completed twice: "
          f"{report['documents_completed_twice']}   failed without reason: "
          f"{report['documents_failed_without_reason']}")  # fmt: skip
    print(f"emulator: {e['generate_requests']} requests {e['by_status']}, billed "
          f"{e['billed']['requests']} ({e['billed']['input_tokens']} in / "
          f"{e['billed']['output_tokens']} out / {e['billed']['thinking_tokens']} thinking) "
          f"${e['billed_cost_usd']}, billed repeats {e['billed_repeats']}")  # fmt: skip
    print(f"ledger ok: {ok['requests']} calls ({ok['input_tokens']} / {ok['output_tokens']} / "
          f"{ok['thinking_tokens']}) ${ok['cost_usd']}; outcomes {report['ledger_outcomes']}")
    print(f"billed to killed workers: {lost['requests']} calls ${lost['cost_usd']}, covered by "
          f"{report['abandoned_rows']} abandoned rows at ${report['abandoned_cost_usd']}")
    print(f"spend ${report['ledger_spend_usd']} of budget ${report['budget_usd']}")
    for failure in report["failures"]:
        print(f"FAILED: {failure}")
    print("all checks passed" if not report["failures"] else "chaos run FAILED")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=ChaosConfig.documents)
    parser.add_argument("--workers", type=int, default=ChaosConfig.workers)
    parser.add_argument("--kills", type=int, default=ChaosConfig.kills)
    parser.add_argument("--seed", type=int, default=ChaosConfig.seed)
    parser.add_argument("--budget-usd", type=Decimal, default=ChaosConfig.budget_usd)
    parser.add_argument("--timeout-s", type=float, default=ChaosConfig.timeout_s)
    parser.add_argument("--postgres", default=ChaosConfig.postgres_url)
    parser.add_argument("--redis-outage-s", type=float, default=ChaosConfig.redis_outage_s,
                        help="keep Redis down this long at its restart (e.g. 70)")
    parser.add_argument("--redis-wipe", action="store_true",
                        help="delete Redis's data while it is down (data loss)")
    args = parser.parse_args()
    cfg = ChaosConfig(documents=args.documents, workers=args.workers, kills=args.kills,
                      seed=args.seed, budget_usd=args.budget_usd, timeout_s=args.timeout_s,
                      postgres_url=args.postgres, redis_outage_s=args.redis_outage_s,
                      redis_wipe=args.redis_wipe)  # fmt: skip
    report = asyncio.run(run_chaos(cfg))
    print_report(report)
    from bench.common import write_result

    figures = {k: v for k, v in report.items() if k != "worker_log_tails"}
    print(f"written: {write_result('chaos', figures)}")
    if report["failures"]:
        print(report.get("worker_log_tails", ""), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
