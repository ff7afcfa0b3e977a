"""The peers benchmark's Markdown table and the issue-16 targets, from bench/peers.py's JSON.

Each CPU-bound cell is the median over the repetitions with its min-max; trap cells are one
run. The targets compare pipeline with the peers of the same run (medians).
"""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from typing import Any

from bench.peers_driver import SHORT_JOBS


def _cell(data: dict[str, Any], key: str, unit: str = "", scale: float = 1.0) -> str:
    if "error" in data:
        return f"error: {data['error']}"
    f = data.get(key)
    if not isinstance(f, dict):
        return "—"
    med, lo, hi = (_num(f[k] * scale) for k in ("median", "min", "max"))
    return f"{med}{unit} ({lo}–{hi})"


def _num(x: float) -> str:
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"


def _median(figures: dict[str, Any], system: str, key: str) -> float | None:
    data = figures["systems"].get(system, {}).get("perf", {})
    f = data.get(key)
    return f["median"] if isinstance(f, dict) else None


def targets(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 16's per-process targets, checked on this run's medians (None: a side missing)."""
    m = lambda s, k: _median(figures, s, k)  # noqa: E731
    checks = [
        ("enqueue→start p50 ≤ 0.5 × SAQ's", m("pipeline", "enqueue_to_start_p50_ms"),
         None if m("saq", "enqueue_to_start_p50_ms") is None
         else 0.5 * m("saq", "enqueue_to_start_p50_ms"), "<="),
        ("no-op jobs/s ≥ 2 × Dramatiq one process", m("pipeline", "noop_jobs_per_s"),
         None if m("dramatiq", "noop_jobs_per_s") is None
         else 2 * m("dramatiq", "noop_jobs_per_s"), ">="),
        ("bulk enqueue/s ≥ 2 × Dramatiq one by one", m("pipeline", "enqueue_bulk_per_s"),
         None if m("dramatiq", "enqueue_one_by_one_per_s") is None
         else 2 * m("dramatiq", "enqueue_one_by_one_per_s"), ">="),
        ("worker start-up ≤ 0.2 s", m("pipeline", "worker_startup_s"), 0.2, "<="),
        ("idle worker PSS ≤ SAQ's", m("pipeline", "idle_worker_mb"),
         m("saq", "idle_worker_mb"), "<="),
        ("memory per waiting slow job ≤ SAQ's", m("pipeline", "kb_per_slow_job"),
         m("saq", "kb_per_slow_job"), "<="),
    ]
    out = []
    for name, ours, bound, op in checks:
        met = None
        if ours is not None and bound is not None:
            met = ours <= bound if op == "<=" else ours >= bound
        out.append({"target": name, "pipeline": ours,
                    "bound": None if bound is None else round(bound, 3), "met": met})
    return out


def table(figures: dict[str, Any], command: str) -> str:
    cfg, systems = figures["settings"], list(figures["systems"])
    rows: list[list[str]] = [["version", *(figures["versions"][s] for s in systems)]]

    def perf(label: str, key: str, unit: str = "", scale: float = 1.0) -> None:
        rows.append([label, *(_cell(figures["systems"][s]["perf"], key, unit, scale)
                              for s in systems)])

    def trap(label: str, phase: str, render: Any) -> None:
        cells = []
        for s in systems:
            data = figures["systems"][s][phase]
            cells.append(f"error: {data['error']}" if "error" in data else render(data))
        rows.append([label, *cells])

    perf("enqueue→start p50, idle worker", "enqueue_to_start_p50_ms", " ms")
    perf("enqueue→start p99, idle worker", "enqueue_to_start_p99_ms", " ms")
    perf("no-op jobs/s, one worker process", "noop_jobs_per_s")
    perf("worker CPU per no-op job (steady state)", "worker_cpu_ms_per_noop_job", " ms")
    perf("enqueue/s, one by one", "enqueue_one_by_one_per_s")
    perf("enqueue/s, bulk (own API)", "enqueue_bulk_per_s")
    perf("worker start-up (spawn → first job)", "worker_startup_s", " s")
    perf("idle worker memory (PSS)", "idle_worker_mb", " MB")
    perf("idle worker memory, anonymous PSS", "idle_worker_anon_mb", " MB")
    perf(f"memory per waiting slow job ({cfg['slow_jobs']} running, anonymous PSS)",
         "kb_per_slow_job", " KB")
    perf("load (1 min) at the start of each run", "loadavg_start")
    if any("error" not in figures["systems"][s]["prefetch"] for s in systems):
        trap(f"prefetch trap: makespan (ideal {cfg['long_s']} s)", "prefetch",
             lambda d: f"{d['makespan_s']} s")
        trap("prefetch trap: short jobs stuck behind the long one", "prefetch",
             lambda d: f"{d['short_jobs_stuck_behind_long']} / {d['short_jobs']}")
        trap(f"ghost trap: duplicate executions ({cfg['ghost_job_s']} s jobs, "
             f"V = {cfg['timeout_s']} s)", "ghost", lambda d: str(d["duplicate_executions"]))
        trap("ghost trap: jobs completed", "ghost",
             lambda d: f"{d['completed_jobs']} / {d['jobs']}")
    head = ["", *systems]
    lines = [f"Measured {datetime.now(UTC).isoformat(timespec='minutes')} on "
             f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}, Python "
             f"{platform.python_version()}), Redis {figures['redis']}, {figures['reps']} "
             f"repetitions (median (min–max)), with `{command}`.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "Settings: " + "; ".join(f"{s}: {NOTES[s]}" for s in systems) + "."]
    if any("error" not in figures["systems"][s]["prefetch"] for s in systems):
        lines[-1] += (f" Prefetch trap: two single-slot workers, one {cfg['long_s']} s job "
                      f"enqueued before {SHORT_JOBS} jobs of {cfg['short_s']} s. Ghost trap: "
                      f"two {cfg['ghost_job_s']} s jobs on two workers with two slots each, "
                      f"watched for {2 * cfg['ghost_job_s'] + cfg['timeout_s'] + 5} s.")
    lines += ["", "Targets (issue 16, this run's medians):", ""]
    for t in figures.get("targets", []):
        mark = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        lines.append(f"- {t['target']}: pipeline {t['pipeline']} vs bound {t['bound']}: {mark}")
    return "\n".join(lines)


NOTES = {
    "celery": "prefork pool (`-c 1` for the one-process figures, `-c K` for K slow jobs), "
              "task_acks_late=True, worker_prefetch_multiplier=4 (default), JSON, Redis "
              "transport visibility_timeout=V in the ghost trap, swept every V s",
    "rq": "default forking Worker, one job at a time per worker process (K slow jobs = K "
          "workers), job_timeout=V in the ghost trap",
    "arq": "max_jobs=10 (default), poll_delay=0.5 s (default), job_timeout=V in the ghost trap",
    "saq": "concurrency=10 (default), default timers, timeout=V per job in the ghost trap",
    "dramatiq": "`--processes 1 --threads 8` (threads = slots; K for K slow jobs), default "
                "middleware (Retries, TimeLimit; time_limit=V in the ghost trap)",
    "dramatiq-default": "its defaults: one process per CPU, 8 threads each",
    "pipeline": "`pipeline worker`, concurrency 32 (default), lease = 2 × expected_duration_s, "
                "renewed; expected_duration_s = V/2 in the ghost trap",
}
