"""Celery, RQ, ARQ and pipeline side by side, on one Redis, on this machine, in one run.

    python bench/peers.py [--quick] [--systems celery,rq,arq,pipeline] [--json]

Each peer gets a virtualenv of its own under .pipeline/bench-peers-venv/<peer> (made on
the first run with `python -m venv` and `pip install` from PyPI; separate because ARQ pins
redis-py < 6 while Celery's Redis transport needs >= 6.4). Each system runs in its own
Redis database, claimed only while empty and emptied again at the end, so nothing else in
that Redis is touched. Measured for every system the same way (bench/peers_driver.py):

- enqueue->start latency p50/p99: one idle worker, one job at a time
- no-op jobs/s through one worker process (each job pushes one timestamp to Redis)
- idle worker memory (PSS of the worker and its children) and memory per concurrent
  slow job: (PSS with K sleeping jobs running - idle PSS) / K, and so how many fit in 8 GB
- trap 1, prefetch starvation: two single-slot workers, one long job then twenty short
  ones; makespan against the ideal (the long job alone)
- trap 2, visibility-timeout ghost: two jobs that run longer than the broker's timeout V
  (Celery visibility_timeout, RQ/ARQ job_timeout, pipeline's first lease); executions
  seen twice are duplicates, paid twice if the job calls an API

The traps are sleep-bound, so the four systems run them at the same time; the CPU-bound
figures run one system after another. Default run about 6-10 minutes; --quick (shorter
sleeps, fewer samples) about 2-3. Every process started is ended by pid, even on error.
Writes bench/results/peers.json and prints a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parent.parent)

import redis  # noqa: E402

from bench.common import ROOT, bench_redis_url, write_result  # noqa: E402
from bench.peers_driver import FULL, QUICK, SHORT_JOBS, descendants  # noqa: E402

VENVS = ROOT / ".pipeline" / "bench-peers-venv"
LOGS = ROOT / ".pipeline" / "bench-peers-logs"
PACKAGES = {"celery": ["celery[redis]"], "rq": ["rq"], "arq": ["arq"]}
SYSTEMS = ["celery", "rq", "arq", "pipeline"]
CLAIM = "peers:claim"


def venv_bin(system: str) -> Path:
    return Path(sys.executable).parent if system == "pipeline" else VENVS / system / "bin"


def ensure_venv(system: str) -> str:
    """Create the peer's venv on first use; report the installed version."""
    if system == "pipeline":
        from importlib.metadata import version

        return version("pipeline") if _has_dist("pipeline") else "checkout"
    python = venv_bin(system) / "python"
    code = f"import {system}, importlib.metadata as m; print(m.version('{system}'))"
    probe = [str(python), "-c", code]
    done = subprocess.run(probe, capture_output=True, text=True) if python.exists() else None
    if done is None or done.returncode != 0:
        print(f"installing {system} into {VENVS / system} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENVS / system)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES[system]], check=True)
        done = subprocess.run(probe, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _has_dist(name: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(name)
    except PackageNotFoundError:
        return False
    return True


def db_url(base: str, db: int) -> str:
    if base.startswith("unix://"):
        return f"{base.split('?')[0]}?db={db}"
    scheme, rest = base.split("://", 1)
    return f"{scheme}://{rest.split('/')[0]}/{db}"


def claim_dbs(base: str, count: int, run_id: str) -> list[int]:
    """Claim `count` empty databases, highest numbers first (tests and apps use db 0)."""
    claimed = []
    for db in range(15, 0, -1):
        client = redis.Redis.from_url(db_url(base, db))
        if client.dbsize() == 0 and client.set(CLAIM, run_id, nx=True):
            claimed.append(db)
        client.close()
        if len(claimed) == count:
            return claimed
    release_dbs(base, claimed, run_id)
    raise SystemExit(f"needed {count} empty Redis databases (1-15) and found {len(claimed)}; "
                     "point PIPELINE_BENCH_REDIS_URL at a Redis with free databases")


def release_dbs(base: str, dbs: list[int], run_id: str) -> None:
    """Empty the databases this run claimed: everything in them is the benchmark's."""
    for db in dbs:
        client = redis.Redis.from_url(db_url(base, db))
        if client.get(CLAIM) in (run_id.encode(), None):
            for key in client.scan_iter(count=1000):
                client.unlink(key)
        client.close()


class Drivers:
    """The driver subprocesses, each its own session; ended by pid with what they started."""

    def __init__(self, quick: bool, pidfile: Path) -> None:
        self.quick, self.pidfile = quick, pidfile
        self.running: list[tuple[str, str, subprocess.Popen[str]]] = []

    def start(self, system: str, phase: str, url: str) -> None:
        cmd = [str(venv_bin(system) / "python"), str(ROOT / "bench" / "peers_driver.py"),
               "--system", system, "--phase", phase, "--redis-url", url,
               "--venv-bin", str(venv_bin(system)), "--pidfile", str(self.pidfile),
               "--logdir", str(LOGS)]
        if self.quick:
            cmd.append("--quick")
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                                start_new_session=True)
        self.running.append((system, phase, proc))

    def collect(self, timeout_s: float) -> dict[tuple[str, str], Any]:
        out: dict[tuple[str, str], Any] = {}
        deadline = time.monotonic() + timeout_s
        for system, phase, proc in self.running:
            try:
                stdout, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.end(proc)
                out[(system, phase)] = {"error": f"timed out after {timeout_s:.0f} s"}
                continue
            lines = stdout.strip().splitlines()
            if proc.returncode == 0 and lines:
                out[(system, phase)] = json.loads(lines[-1])
            else:
                out[(system, phase)] = {"error": f"driver exited {proc.returncode}; logs in {LOGS}"}
        self.running = []
        return out

    def end(self, proc: subprocess.Popen[str]) -> None:
        """SIGTERM lets the driver kill its workers; whatever is left gets SIGKILL by pid."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                for pid in [*descendants(proc.pid), proc.pid]:
                    _kill(pid)
                proc.wait(10)

    def end_all(self) -> None:
        for _, _, proc in self.running:
            self.end(proc)
        self.running = []
        if self.pidfile.exists():  # workers a dead driver could not end
            for line in self.pidfile.read_text().split():
                pid = int(line)
                if Path(f"/proc/{pid}").exists() and _is_ours(pid):
                    for child in [*descendants(pid), pid]:
                        _kill(child)
            self.pidfile.unlink()


def _is_ours(pid: int) -> bool:
    """A recorded pid may have been reused; only kill it if it still runs from this checkout."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return b"PEERS_REDIS_URL=" in environ


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run(systems: list[str], quick: bool) -> dict[str, Any]:
    versions = {s: ensure_venv(s) for s in systems}
    base, server = bench_redis_url()
    run_id = uuid.uuid4().hex
    LOGS.mkdir(parents=True, exist_ok=True)
    drivers = Drivers(quick, LOGS / f"workers-{run_id[:8]}.pids")
    dbs: list[int] = []
    results: dict[tuple[str, str], Any] = {}
    try:
        dbs = claim_dbs(base, 2 * len(systems), run_id)
        trap_dbs = {s: (dbs[2 * i], dbs[2 * i + 1]) for i, s in enumerate(systems)}
        for system in systems:  # CPU-bound figures: one system at a time
            print(f"{system}: latency, throughput, memory ...", file=sys.stderr)
            drivers.start(system, "perf", db_url(base, trap_dbs[system][0]))
            results |= drivers.collect(180 if quick else 420)
            release_dbs(base, [trap_dbs[system][0]], run_id)
            _reclaim(base, trap_dbs[system][0], run_id)
        print("traps (all systems at once) ...", file=sys.stderr)
        for system in systems:
            drivers.start(system, "prefetch", db_url(base, trap_dbs[system][0]))
            drivers.start(system, "ghost", db_url(base, trap_dbs[system][1]))
        results |= drivers.collect(150 if quick else 300)
    finally:
        drivers.end_all()
        release_dbs(base, dbs, run_id)
        if server is not None:
            server.stop()
    return {"redis": base.split("@")[-1], "quick": quick, "versions": versions,
            "settings": QUICK if quick else FULL,
            "systems": {s: {p: results.get((s, p), {"error": "not run"})
                            for p in ("perf", "prefetch", "ghost")} for s in systems}}


def _reclaim(base: str, db: int, run_id: str) -> None:
    client = redis.Redis.from_url(db_url(base, db))
    client.set(CLAIM, run_id)
    client.close()


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:,}{unit}" if isinstance(value, int) else f"{value}{unit}"


def _fits(count: int | None) -> str:
    """Past 100k the limit is file descriptors and Redis connections, not memory."""
    return "> 100,000" if count is None or count > 100_000 else f"{count:,}"


def table(figures: dict[str, Any], command: str) -> str:
    cfg = figures["settings"]
    head = ["", *figures["systems"]]
    rows: list[list[str]] = []

    def row(label: str, phase: str, render: Any) -> None:
        cells = []
        for system in figures["systems"]:
            data = figures["systems"][system][phase]
            cells.append(f"error: {data['error']}" if "error" in data else render(data))
        rows.append([label, *cells])

    row("version", "perf", lambda d: "")
    rows[-1][1:] = [figures["versions"][s] for s in figures["systems"]]
    row("enqueue→start p50 / p99", "perf",
        lambda d: f"{d['enqueue_to_start_p50_ms']} / {d['enqueue_to_start_p99_ms']} ms")
    row("no-op jobs/s, one worker process", "perf", lambda d: _fmt(d["noop_jobs_per_s"]))
    row("idle worker memory (PSS)", "perf", lambda d: f"{d['idle_worker_mb']} MB")
    row(f"memory per concurrent slow job ({cfg['slow_jobs']} running)", "perf",
        lambda d: f"{d['mb_per_slow_job']} MB")
    row("slow jobs that fit in 8 GB", "perf", lambda d: _fits(d["slow_jobs_in_8gb"]))
    row(f"prefetch trap: makespan (ideal {cfg['long_s']} s)", "prefetch",
        lambda d: f"{_fmt(d['makespan_s'])} s")
    row("prefetch trap: short jobs stuck behind the long one", "prefetch",
        lambda d: f"{d['short_jobs_stuck_behind_long']} / {d['short_jobs']}")
    row(f"ghost trap: duplicate executions ({cfg['ghost_job_s']} s jobs, V = {cfg['timeout_s']} s)",
        "ghost", lambda d: str(d["duplicate_executions"]))
    row("ghost trap: jobs completed", "ghost", lambda d: f"{d['completed_jobs']} / {d['jobs']}")
    lines = [f"Measured {datetime.now(UTC).date().isoformat()} on {os.cpu_count()} CPUs, Redis "
             f"{figures['redis']}, with `{command}`.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "Settings: " + "; ".join(
        f"{s}: {_notes(s)}" for s in figures["systems"]) + ". "
        f"Prefetch trap: two single-slot workers, one {cfg['long_s']} s job enqueued before "
        f"{SHORT_JOBS} jobs of {cfg['short_s']} s. Ghost trap: two {cfg['ghost_job_s']} s jobs "
        f"on two workers with two slots each, watched for "
        f"{2 * cfg['ghost_job_s'] + cfg['timeout_s'] + 5} s. "
        "Memory is PSS summed over each worker's process tree."]
    return "\n".join(lines)


def _notes(system: str) -> str:
    return {
        "celery": "prefork pool (`-c 1` for the one-process figures), task_acks_late=True, "
                  "worker_prefetch_multiplier=4 (default), JSON, Redis transport "
                  "visibility_timeout=V in the ghost trap, swept every V s "
                  "(unacked_restore_interval=V, unacked_restore_throttle=1, as kombu's docs "
                  "advise for a low timeout; the default sweep is ~100 s)",
        "rq": "default forking Worker, one job per worker process (K slow jobs = K workers), "
              "job_timeout=V in the ghost trap",
        "arq": "max_jobs=10 (default; = slots in the traps and memory figure), poll_delay=0.5 s "
               "(default), job_timeout=V in the ghost trap",
        "pipeline": "`pipeline worker`, concurrency 32 (default; = slots in the traps and "
                    "memory figure), lease = 2 x expected_duration_s, renewed; "
                    "expected_duration_s = V/2 in the ghost trap",
    }[system]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter sleeps, fewer samples (~2-3 min)")
    ap.add_argument("--systems", default=",".join(SYSTEMS),
                    help="comma-separated subset of " + ",".join(SYSTEMS))
    ap.add_argument("--json", action="store_true", help="print the JSON result too")
    args = ap.parse_args()
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown or not systems:
        ap.error(f"unknown system {unknown}; choose from {', '.join(SYSTEMS)}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    command = "python bench/peers.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])
    figures = run(systems, args.quick)
    figures["command"] = command
    path = write_result("peers", figures)
    print(table(figures, command))
    print(f"\nwritten to {path}")
    if args.json:
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
