"""Runs one phase of the peers benchmark for one system and prints its figures as JSON.

    python bench/peers_driver.py --system celery|rq|arq|pipeline --phase perf|prefetch|ghost
        --redis-url redis://host:port/DB --venv-bin DIR [--quick] [--pidfile F] [--logdir D]
        [--figures startup,memory,...]

Started by bench/peers.py with the interpreter that has the system installed (the peers
venv for Celery, RQ and ARQ; the project's for pipeline), so it imports only redis-py and
the standard library itself. Every system is measured the same way: its jobs push events
through bench/peers_record.py and the figures come from those events and from /proc.
Every worker it starts is ended by pid, with all its descendants, even on error.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # import bench.* from the checkout, not bench/ as a top level

import redis  # noqa: E402

from bench.peers_record import EVENTS, READY  # noqa: E402

QUICK = {"enqueue_jobs": 500, "throughput_cap_s": 10, "latency_samples": 50,
         "latency_cap_s": 10, "slow_jobs": 40, "slow_job_s": 60,
         "long_s": 12, "short_s": 0.2, "timeout_s": 5, "ghost_job_s": 12}
FULL = {"enqueue_jobs": 2500, "throughput_cap_s": 30, "latency_samples": 300,
        "latency_cap_s": 40, "slow_jobs": 40, "slow_job_s": 60,
        "long_s": 60, "short_s": 1.0, "timeout_s": 10, "ghost_job_s": 20}
SHORT_JOBS = 20
GHOST_JOBS = 2
# slots of "one worker process" in its default configuration (Dramatiq: 1 process x 8
# threads; dramatiq-default: its default processes x threads)
DEFAULT_SLOTS = {"celery": 1, "rq": 1, "arq": 10, "saq": 10, "dramatiq": 8,
                 "dramatiq-default": 8, "pipeline": 32}


# --- processes -------------------------------------------------------------------------

def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    tree, out, todo = _children(), [], [pid]
    while todo:
        kids = tree.get(todo.pop(), [])
        out.extend(kids)
        todo.extend(kids)
    return out


def pss_mb(pid: int, field: str = "Pss") -> float:
    """Proportional set size: shared pages split between the processes sharing them, so
    forked pool children are not counted once per child (RSS would count them N times).
    `field="Pss_Anon"`: its anonymous part only (heap, arenas, stacks), which a process
    shares with no one but its own forked children; the file-backed rest (libpython, .so
    files) is split with every other process on the machine that maps the same file, so it
    moves when unrelated processes start or end."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """CPU seconds of a process, with those of its children it has reaped (a forked horse)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) * _TICK_S  # utime stime cutime cstime


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.url: str = args.redis_url
        self.redis = redis.Redis.from_url(self.url, decode_responses=True)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logdir = Path(args.logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)

    def adapter(self, scenario: str) -> Any:
        system, _, variant = self.args.system.partition("-")
        os.environ.setdefault("PEERS_REDIS_URL", self.url)  # for brokers made at import
        module = importlib.import_module(f"bench.peers_{system}")
        queue = f"peers-{scenario}-{uuid.uuid4().hex[:6]}"
        if variant:
            return module.Adapter(self.url, queue, **{variant: True})
        return module.Adapter(self.url, queue)

    def start_workers(self, adapter: Any, workers: int, slots: int,
                      timeout_s: float | None = None,
                      ready: bool = True) -> list[subprocess.Popen[bytes]]:
        self.redis.delete(READY)
        count = workers * adapter.workers_per_slots(slots)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
        env.update({"PEERS_REDIS_URL": self.url, "PEERS_QUEUE": adapter.queue_name,
                    "PYTHONPATH": str(ROOT)})
        env.update(adapter.worker_env(slots, timeout_s))
        started = []
        for i in range(count):
            log = open(self.logdir / f"{self.args.system}-{self.args.phase}-{i}.log", "ab")
            proc = subprocess.Popen(adapter.worker_cmd(self.args.venv_bin, slots, f"w{i}"),
                                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            self.procs.append(proc)
            started.append(proc)
            if self.args.pidfile:
                with open(self.args.pidfile, "a") as f:
                    f.write(f"{proc.pid}\n")
        if not ready:
            return started
        expected = count * getattr(adapter, "ready_per_worker", 1)
        self.wait(lambda: adapter.ready_count(self.redis) >= expected, 180, "workers to be ready",
                  started)
        time.sleep(0.5)  # let each worker reach its blocking read before the clock starts
        return started

    def wait(self, check: Any, timeout_s: float, what: str,
             procs: list[subprocess.Popen[bytes]] | None = None) -> bool:
        deadline = time.monotonic() + timeout_s
        while not check():
            for proc in procs or []:
                if proc.poll() is not None:
                    raise SystemExit(f"{self.args.system} worker {proc.pid} exited "
                                     f"({proc.returncode}) while waiting for {what}; see "
                                     f"{self.logdir}")
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def tree_cpu_s(self, procs: list[subprocess.Popen[bytes]]) -> float:
        return sum(cpu_s(p) for proc in procs for p in [proc.pid, *descendants(proc.pid)])

    def tree_mb(self, procs: list[subprocess.Popen[bytes]], field: str = "Pss") -> float:
        return sum(pss_mb(p, field) for proc in procs for p in [proc.pid, *descendants(proc.pid)])

    def stop(self, procs: list[subprocess.Popen[bytes]]) -> None:
        """SIGKILL each worker and every process under it, by pid: the figures are already
        in Redis, and a warm shutdown would wait for minute-long sleeps."""
        for proc in procs:
            if proc.poll() is None:
                for pid in [*descendants(proc.pid), proc.pid]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            proc.wait(30)
            if proc in self.procs:
                self.procs.remove(proc)

    def events(self) -> list[tuple[str, str, float, int]]:
        return [tuple(json.loads(e)) for e in self.redis.lrange(EVENTS, 0, -1)]  # type: ignore[misc]


# --- phases ----------------------------------------------------------------------------

def perf(run: Run, cfg: dict[str, Any]) -> dict[str, Any]:
    """The CPU-bound figures of one system, each defined once for all (see bench/peers.py):
    the steps that measure the figures asked for (`--figures`), each step run once."""
    out = {"worker_slots": DEFAULT_SLOTS[run.args.system], "loadavg_start": os.getloadavg()}
    for step in dict.fromkeys(FIGURES[f] for f in run.args.figures.split(",")):
        out |= step(run, cfg)
    out["loadavg_end"] = os.getloadavg()
    return out


def enqueue_and_throughput(run: Run, cfg: dict[str, Any]) -> dict[str, Any]:
    """Enqueue rates with no worker running, then start one worker on the jobs they left:
    start-up = spawn -> its first job's Redis write; throughput = the steady middle of the
    run (completions 10 %..90 %), within `throughput_cap_s`."""
    r, n, slots = run.redis, cfg["enqueue_jobs"], DEFAULT_SLOTS[run.args.system]
    adapter = run.adapter("throughput")
    r.delete(EVENTS)
    t0 = time.perf_counter()
    adapter.enqueue_each("noop", [(f"one-{i}",) for i in range(n)])
    one_s = time.perf_counter() - t0
    bulk_s = None
    calls = [(f"bulk-{i}",) for i in range(n)]
    if adapter.bulk_api:
        t0 = time.perf_counter()
        adapter.enqueue_many("noop", calls)
        bulk_s = time.perf_counter() - t0
    else:
        adapter.enqueue_each("noop", calls)
    spawned = time.time()
    procs = run.start_workers(adapter, 1, slots, ready=False)
    run.wait(lambda: r.llen(EVENTS) >= 1, 60, "a first job", procs)
    first = [json.loads(e)[2] for e in r.lrange(EVENTS, 0, 0)]
    if not first:
        raise SystemExit(f"{run.args.system}: no job started")
    deadline = time.monotonic() + cfg["throughput_cap_s"]
    samples: list[tuple[int, float]] = []  # (jobs done, worker CPU s): CPU per job in steady state

    def sample() -> bool:
        samples.append((r.llen(EVENTS), run.tree_cpu_s(procs)))
        return samples[-1][0] >= 2 * n or time.monotonic() > deadline

    run.wait(sample, 1e9, "no-op jobs", procs)
    done = sorted(e[2] for e in run.events())
    mid = [(k, c) for k, c in samples if len(done) // 10 <= k <= len(done) * 9 // 10]
    cpu_ms = ((mid[-1][1] - mid[0][1]) * 1000 / (mid[-1][0] - mid[0][0])
              if len(mid) > 1 and mid[-1][0] > mid[0][0] else None)
    run.stop(procs)
    adapter.close()
    lo, hi = len(done) // 10, len(done) * 9 // 10
    steady = (hi - lo) / (done[hi] - done[lo]) if hi > lo and done[hi] > done[lo] else None
    return {
        "enqueue_jobs": n,
        "enqueue_one_by_one_per_s": round(n / one_s, 1),
        "bulk_api": adapter.bulk_api,
        "enqueue_bulk_per_s": round(n / bulk_s, 1) if bulk_s else None,
        "worker_startup_s": round(first[0] - spawned, 3),
        "noop_jobs": 2 * n, "noop_completed": len(done),
        "noop_jobs_per_s": round(steady, 1) if steady else None,
        "worker_cpu_ms_per_noop_job": round(cpu_ms, 3) if cpu_ms else None,
    }


def latency_and_idle(run: Run, cfg: dict[str, Any]) -> dict[str, Any]:
    """One idle worker, one job at a time: enqueue -> the job's first Redis write (its own
    clock; one machine, one clock). Idle memory is read before, with the worker warmed up."""
    r, slots = run.redis, DEFAULT_SLOTS[run.args.system]
    adapter = run.adapter("latency")
    procs = run.start_workers(adapter, 1, slots)
    r.delete(EVENTS)
    for i in range(5):  # warm-up: imports, connections, first fork
        adapter.enqueue("stamp", f"warm-{i}")
        if r.blpop([EVENTS], 30) is None:
            raise SystemExit(f"{run.args.system}: warm-up job never started")
    time.sleep(1.0)
    idle = run.tree_mb(procs)
    idle_anon = run.tree_mb(procs, "Pss_Anon")
    latencies: list[float] = []
    deadline = time.monotonic() + cfg["latency_cap_s"]
    while len(latencies) < cfg["latency_samples"] and time.monotonic() < deadline:
        t0 = time.time()
        adapter.enqueue("stamp", f"lat-{len(latencies)}")
        got = r.blpop([EVENTS], 30)
        if got is None:
            raise SystemExit(f"{run.args.system}: a latency job never started")
        latencies.append((json.loads(got[1])[2] - t0) * 1000)
        time.sleep(0.002)  # let the worker settle back to idle, as between real submissions
    run.stop(procs)
    adapter.close()
    return {
        "enqueue_to_start_p50_ms": round(percentile(latencies, 50), 2),
        "enqueue_to_start_p99_ms": round(percentile(latencies, 99), 2),
        "latency_samples": len(latencies),
        "idle_worker_mb": round(idle, 1),
        "idle_worker_anon_mb": round(idle_anon, 1),  # the part no other process shares
    }


def slow_job_memory(run: Run, cfg: dict[str, Any]) -> dict[str, Any]:
    """A worker with K slots, warmed up and idle, then running K sleeping jobs: the marginal
    memory of one waiting job, (anonymous PSS then - anonymous PSS idle) / K, each the median
    of MEMORY_SAMPLES readings of the worker's process tree. Anonymous memory is what a job's
    objects take, and no process outside the tree shares it, so the difference is not moved by
    other processes mapping or unmapping the same libraries (whole PSS is: on a shared
    machine its readings wander by ~0.1 MB, which is 10 KB a job at K = 10)."""
    r, k = run.redis, cfg["slow_jobs"]
    adapter = run.adapter("memory")
    procs = run.start_workers(adapter, 1, k)
    r.delete(EVENTS)
    for i in range(3):
        adapter.enqueue("stamp", f"warm-{i}")
        if r.blpop([EVENTS], 30) is None:
            raise SystemExit(f"{run.args.system}: warm-up job never started")
    time.sleep(1.0)
    idle, idle_anon = _memory_samples(run, procs)
    adapter.enqueue_each("sleep", [(f"slow-{i}", cfg["slow_job_s"]) for i in range(k)])
    all_started = run.wait(lambda: r.llen(EVENTS) >= k, cfg["slow_job_s"] - 10, "slow jobs", procs)
    time.sleep(0.5)
    busy, busy_anon = _memory_samples(run, procs)  # while every slow job sleeps
    run.stop(procs)
    adapter.close()
    return {
        "slow_jobs": k, "slow_jobs_all_running": all_started, "slots_idle_mb": round(idle, 1),
        "slow_jobs_peak_mb": round(busy, 1),
        "slots_idle_anon_mb": round(idle_anon, 2), "slow_jobs_anon_mb": round(busy_anon, 2),
        "kb_per_slow_job": round((busy_anon - idle_anon) * 1024 / k, 1),
        "kb_per_slow_job_whole_pss": round((busy - idle) * 1024 / k, 1),
    }


MEMORY_SAMPLES = 5


def _memory_samples(run: Run, procs: list[subprocess.Popen[bytes]]) -> tuple[float, float]:
    """Median PSS and median anonymous PSS (MB) of the process tree over a second."""
    whole, anon = [], []
    for _ in range(MEMORY_SAMPLES):
        whole.append(run.tree_mb(procs))
        anon.append(run.tree_mb(procs, "Pss_Anon"))
        time.sleep(0.25)
    return statistics.median(whole), statistics.median(anon)


def prefetch(run: Run, cfg: dict[str, Any]) -> dict[str, Any]:
    r, long_s, short_s = run.redis, cfg["long_s"], cfg["short_s"]
    adapter = run.adapter("prefetch")
    procs = run.start_workers(adapter, 2, 1)
    r.delete(EVENTS)
    t0 = time.time()
    adapter.enqueue("sleep", "long", long_s)
    for i in range(SHORT_JOBS):
        adapter.enqueue("sleep", f"short-{i}", short_s)
    ends = lambda: sum(1 for e in run.events() if e[0] == "end")  # noqa: E731
    limit_s = long_s + SHORT_JOBS * short_s + 60
    run.wait(lambda: ends() >= SHORT_JOBS + 1, limit_s, "trap jobs", procs)
    events = run.events()
    run.stop(procs)
    adapter.close()
    starts = {e[1]: e[2] for e in events if e[0] == "start"}
    finished = [e[2] for e in events if e[0] == "end"]
    long_end = next((e[2] for e in events if e[0] == "end" and e[1] == "long"), None)
    stuck = sum(1 for tag, t in starts.items()
                if tag != "long" and long_end is not None and t >= long_end - 0.05)
    return {
        "long_job_s": long_s, "short_jobs": SHORT_JOBS, "short_job_s": short_s,
        "completed": len(finished),
        "makespan_s": round(max(finished) - t0, 2) if len(finished) == SHORT_JOBS + 1 else None,
        "ideal_s": max(long_s, SHORT_JOBS * short_s),
        "short_jobs_stuck_behind_long": stuck,
    }


def ghost(run: Run, cfg: dict[str, Any]) -> dict[str, Any]:
    r, timeout_s, job_s = run.redis, cfg["timeout_s"], cfg["ghost_job_s"]
    adapter = run.adapter("ghost")
    procs = run.start_workers(adapter, 2, 2, timeout_s=timeout_s)
    r.delete(EVENTS)
    for i in range(GHOST_JOBS):
        adapter.enqueue("sleep", f"ghost-{i}", job_s, timeout_s=timeout_s)
    window_s = 2 * job_s + timeout_s + 5
    deadline = time.monotonic() + window_s
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise SystemExit(f"{run.args.system} worker {proc.pid} exited in the ghost trap")
        time.sleep(0.25)
    events = run.events()
    run.stop(procs)
    adapter.close()
    starts = [e[1] for e in events if e[0] == "start"]
    ends = [e[1] for e in events if e[0] == "end"]
    return {
        "broker_timeout_s": timeout_s, "job_s": job_s, "jobs": GHOST_JOBS,
        "observed_s": window_s, "executions": len(starts),
        "duplicate_executions": len(starts) - len(set(starts)),
        "completed_jobs": len(set(ends)),
        "executions_cut_short": len(starts) - len(ends),
    }


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


PHASES = {"perf": perf, "prefetch": prefetch, "ghost": ghost}
# A figure of the perf phase -> the step that measures it (with the others of its step: the
# start-up needs the pre-enqueued jobs the enqueue rates leave; idle memory is read before
# the latency samples).
FIGURES = {"enqueue": enqueue_and_throughput, "startup": enqueue_and_throughput,
           "throughput": enqueue_and_throughput, "latency": latency_and_idle,
           "memory": latency_and_idle, "slow-job-memory": slow_job_memory}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--system", required=True, choices=sorted(DEFAULT_SLOTS))
    ap.add_argument("--phase", required=True, choices=sorted(PHASES))
    ap.add_argument("--redis-url", required=True)
    ap.add_argument("--venv-bin", required=True, help="bin/ of the venv holding the peer's CLI")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--figures", default=",".join(FIGURES),
                    help="perf phase: comma-separated subset of " + ",".join(FIGURES))
    ap.add_argument("--pidfile", default="")
    ap.add_argument("--logdir", default=str(ROOT / ".pipeline" / "bench-peers-logs"))
    args = ap.parse_args()
    unknown = sorted(set(args.figures.split(",")) - set(FIGURES))
    if unknown:
        ap.error(f"unknown figure {unknown}; choose from {', '.join(FIGURES)}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    run = Run(args)
    try:
        figures = PHASES[args.phase](run, QUICK if args.quick else FULL)
    finally:
        run.stop(list(run.procs))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
