"""Celery, RQ, ARQ, SAQ, Dramatiq and pipeline side by side, on one Redis, on this machine.

    python bench/peers.py [--quick] [--reps 3] [--systems celery,rq,...] [--no-traps] [--json]
                          [--figures startup,memory,...]

Each peer gets a virtualenv of its own under .pipeline/bench-peers-venv/<peer> (made on
the first run with `python -m venv` and `pip install` from PyPI; separate because ARQ pins
redis-py < 6 while Celery's Redis transport needs >= 6.4). Each system runs in its own
Redis database, claimed only while empty and emptied again at the end, so nothing else in
that Redis is touched. Every figure has one definition, applied to every system by
bench/peers_driver.py; every job body is the same: push one event (kind, tag, the job's
clock) to Redis, and that push is the job's observable start.

- enqueue->start p50/p99: one idle worker, one job at a time; from just before the enqueue
  call to the job's first Redis write
- no-op jobs/s through one worker process: jobs pre-enqueued, one worker started on them;
  the rate between the 10th and 90th percentile of completions (steady state)
- worker CPU per no-op job: the worker's process tree's CPU time over the same steady
  window, divided by the jobs done in it (less at the mercy of the machine's load than a rate)
- enqueue rate, one by one (each call awaited before the next) and bulk (the system's own
  API for many jobs, where it has one), with no worker running
- worker start-up: spawn -> the first pre-enqueued job's start
- idle worker memory (PSS of the worker and its children, after a few jobs) and marginal
  memory per waiting slow job: (anonymous PSS with K sleeping jobs - anonymous PSS of the
  same worker idle) / K, each the median of 5 readings (anonymous: the part no process
  outside the worker's tree shares, so other processes on the machine do not move it)
- traps (once, not repeated): prefetch starvation and the visibility-timeout ghost (see
  bench/peers_driver.py)

The CPU-bound figures run one system at a time, `--reps` times, the systems interleaved
(repetition r starts at a different system) so a change in the machine's load falls on all;
each figure is reported as the median with min-max. The machine's load (os.getloadavg) is
recorded before and after each system's run. `--figures` runs only the steps that measure
the figures named (bench/peers_driver.py's FIGURES; a partial run writes
bench/results/peers-<figures>.json, not peers.json). "dramatiq" is one process (its threads =
slots); "dramatiq-default" is its default (one process per CPU, 8 threads each). Default run
~15-25 minutes; --quick (fewer samples, shorter traps) ~5. Every process started is ended by
pid, even on error. Writes bench/results/peers.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parent.parent)

import redis  # noqa: E402

from bench.common import ROOT, bench_redis_url, write_result  # noqa: E402
from bench.peers_driver import FIGURES, FULL, QUICK, descendants  # noqa: E402
from bench.peers_table import table, targets  # noqa: E402

VENVS = ROOT / ".pipeline" / "bench-peers-venv"
LOGS = ROOT / ".pipeline" / "bench-peers-logs"
PACKAGES = {"celery": ["celery[redis]"], "rq": ["rq"], "arq": ["arq"],
            # saq 0.26 imports typing_extensions without declaring it
            "saq": ["saq[hiredis]", "typing_extensions"],
            "dramatiq": ["dramatiq[redis]", "hiredis"]}
SYSTEMS = ["celery", "rq", "arq", "saq", "dramatiq", "dramatiq-default", "pipeline"]
TRAP_SYSTEMS = ["celery", "rq", "arq", "saq", "dramatiq", "pipeline"]
CLAIM = "peers:claim"


def venv_bin(system: str) -> Path:
    system = system.split("-")[0]
    return Path(sys.executable).parent if system == "pipeline" else VENVS / system / "bin"


def ensure_venv(system: str) -> str:
    """Create the peer's venv on first use; report the installed version."""
    system = system.split("-")[0]
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

    def __init__(self, quick: bool, pidfile: Path, figures: list[str]) -> None:
        self.quick, self.pidfile, self.figures = quick, pidfile, figures
        self.running: list[tuple[str, str, subprocess.Popen[str]]] = []

    def start(self, system: str, phase: str, url: str) -> None:
        cmd = [str(venv_bin(system) / "python"), str(ROOT / "bench" / "peers_driver.py"),
               "--system", system, "--phase", phase, "--redis-url", url,
               "--venv-bin", str(venv_bin(system)), "--pidfile", str(self.pidfile),
               "--logdir", str(LOGS), "--figures", ",".join(self.figures)]
        if self.quick:
            cmd.append("--quick")
        # the bench's own variable is not a pipeline setting: the pipeline adapter's settings
        # refuse unknown PIPELINE_* names, so with it set that driver could not start
        env = {k: v for k, v in os.environ.items() if k != "PIPELINE_BENCH_REDIS_URL"}
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
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


def run(systems: list[str], quick: bool, reps: int, traps: bool,
        figures: list[str]) -> dict[str, Any]:
    versions = {s: ensure_venv(s) for s in systems}
    # pip byte-compiled the peers at install; a checkout run with PYTHONDONTWRITEBYTECODE
    # would compile pipeline's modules at every worker start instead
    subprocess.run([sys.executable, "-m", "compileall", "-q", "pipeline", "tasks", "bench"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    base, server = bench_redis_url()
    run_id = uuid.uuid4().hex
    LOGS.mkdir(parents=True, exist_ok=True)
    drivers = Drivers(quick, LOGS / f"workers-{run_id[:8]}.pids", figures)
    trap_systems = [s for s in systems if s in TRAP_SYSTEMS] if traps else []
    dbs: list[int] = []
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    trapped: dict[tuple[str, str], Any] = {}
    try:
        dbs = claim_dbs(base, max(1, 2 * len(trap_systems)), run_id)
        for rep in range(reps):  # CPU-bound figures: one system at a time, order rotated
            order = systems[rep % len(systems):] + systems[:rep % len(systems)]
            for system in order:
                print(f"repetition {rep + 1}/{reps}: {system} (load {os.getloadavg()[0]:.2f})",
                      file=sys.stderr)
                drivers.start(system, "perf", db_url(base, dbs[0]))
                runs[system].append(drivers.collect(240 if quick else 600)[(system, "perf")])
                release_dbs(base, [dbs[0]], run_id)
                _reclaim(base, dbs[0], run_id)
        if trap_systems:
            print("traps (all systems at once) ...", file=sys.stderr)
            for i, system in enumerate(trap_systems):
                drivers.start(system, "prefetch", db_url(base, dbs[2 * i]))
                drivers.start(system, "ghost", db_url(base, dbs[2 * i + 1]))
            trapped = drivers.collect(150 if quick else 300)
    finally:
        drivers.end_all()
        release_dbs(base, dbs, run_id)
        if server is not None:
            server.stop()
    return {"redis": base.split("@")[-1], "quick": quick, "reps": reps, "versions": versions,
            "figures": figures,
            "settings": QUICK if quick else FULL,
            "systems": {s: {"perf": summarize(runs[s]), "perf_runs": runs[s],
                            **{p: trapped.get((s, p), {"error": "not run"})
                               for p in ("prefetch", "ghost")}} for s in systems}}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each numeric figure over the repetitions that finished: median, min and max."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[0]["error"] if runs else "not run"}
    out: dict[str, Any] = {"repetitions": len(ok)}
    for key, value in ok[0].items():
        if key.startswith("loadavg"):
            values = [r[key][0] for r in ok]  # the 1-minute load
        elif isinstance(value, int | float) and not isinstance(value, bool):
            values = [r[key] for r in ok if r.get(key) is not None]
        else:
            out[key] = value
            continue
        if values:
            out[key] = {"median": round(statistics.median(values), 3),
                        "min": min(values), "max": max(values)}
    return out


def _reclaim(base: str, db: int, run_id: str) -> None:
    client = redis.Redis.from_url(db_url(base, db))
    client.set(CLAIM, run_id)
    client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer samples, shorter traps (~5 min)")
    ap.add_argument("--systems", default=",".join(SYSTEMS),
                    help="comma-separated subset of " + ",".join(SYSTEMS))
    ap.add_argument("--reps", type=int, default=3, help="repetitions of the CPU-bound figures")
    ap.add_argument("--no-traps", action="store_true", help="skip the prefetch and ghost traps")
    ap.add_argument("--figures", default=",".join(FIGURES),
                    help="only the steps measuring these figures: comma-separated subset of "
                    + ",".join(FIGURES))
    ap.add_argument("--json", action="store_true", help="print the JSON result too")
    args = ap.parse_args()
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown or not systems:
        ap.error(f"unknown system {unknown}; choose from {', '.join(SYSTEMS)}")
    figures = [f.strip() for f in args.figures.split(",") if f.strip()]
    unknown = sorted(set(figures) - set(FIGURES))
    if unknown or not figures:
        ap.error(f"unknown figure {unknown}; choose from {', '.join(FIGURES)}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    command = "python bench/peers.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])
    result = run(systems, args.quick, max(1, args.reps), not args.no_traps, figures)
    result["command"] = command
    result["targets"] = targets(result)
    partial = set(figures) != set(FIGURES)
    path = write_result("peers-" + "-".join(figures) if partial else "peers", result)
    print(table(result, command))
    print(f"\nwritten to {path}")
    if args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
