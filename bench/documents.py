"""The product's job, measured: documents in, Redis memory, worker memory, a long manual, and
the shared quota (issue 16).

    python bench/documents.py [--quick] [--only submit,worker,manual,limiter]

1. submit: N one-page PDFs (default 1,000) through `submit_uploads`, the path of `pipeline
   submit`, in a process of its own (bench/documents_submit.py): documents/s and its peak
   memory (VmHWM RSS; PSS sampled every 20 ms). Then, with no worker running, what the
   queued documents hold in Redis: MEMORY USAGE of every key of the run's private prefix,
   by kind of key, per queued document (target <= 2 KB).
2. worker: M large PDFs (default 32 of 14 MB: each one request of ~19 MB, just under Gemini's
   20 MB inline limit, so a document is one call) analysed by one `pipeline worker
   --concurrency 32` against the Gemini emulator (its own process, answers delayed so the
   calls pile up). Peak PSS of the worker's process tree against the PDF bytes of the calls
   the emulator held open at once, inline or cited as uploaded files (target <= 1.5 x); a
   PDF from PIPELINE_FILES_API_MIN_BYTES (4 MB) goes through the Files API. `--large-mb 20`
   sends 20 MB PDFs, which the worker splits into two parts each and merges (three calls a
   document, a longer run).
3. manual: a 2,415-page PDF inspected (the validity rule submit and the worker apply) and
   planned (page ranges, parts split and each part's request measured, as tasks/fit.py does),
   in a fresh process: seconds per step and peak RSS.
4. limiter: bench/limiter.py's worker run (4 processes) at 10/min and at 2,000/min, settings
   and emulator quota alike: share of the quota used and 429s. The target's share is the
   sustained one (mean requests per full 60 s window inside the run; bench/limiter.py says
   why); the busiest window and the old first-to-last rate are printed beside it.

Every run uses its own key prefix (deleted afterwards), a temporary PIPELINE_HOME and SQLite
ledger, the offline analyzer for step 1 and the emulator for 2 and 4. Figures are printed and
written to bench/results/documents.json. PDFs are made once and cached in .pipeline/bench/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.common import ROOT, bench_redis_url, write_result  # noqa: E402
from bench.documents_pdfs import large_pdfs, manual, one_page_pdfs  # noqa: E402

MB = 1024 * 1024


# -- processes and memory ---------------------------------------------------------------------
def pss_mb(pid: int, tree: bool = True) -> float:
    """PSS of a process (and its descendants) in MB; 0 once it is gone."""
    import psutil

    try:
        procs = [psutil.Process(pid)]
        if tree:
            procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for proc in procs:
        try:
            text = Path(f"/proc/{proc.pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
    return total / 1024


class Sampler(threading.Thread):
    """Samples `probe()` every `interval_s` until stopped; keeps every sample."""

    def __init__(self, probe: Any, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.probe, self.interval_s = probe, interval_s
        self.samples: list[Any] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.samples.append(self.probe())
            self.done.wait(self.interval_s)

    def stop(self) -> list[Any]:
        self.done.set()
        self.join()
        return self.samples


def child_env(redis_url: str, prefix: str, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env.update({"PIPELINE_REDIS_URL": redis_url, "PIPELINE_KEY_PREFIX": prefix,
                "PIPELINE_HOME": str(home), "PIPELINE_DATABASE_URL": f"sqlite:///{home}/l.db",
                "PIPELINE_PROVIDER": "offline", "PYTHONPATH": str(ROOT), **extra})  # fmt: skip
    return env


def run_submit(paths: list[Path], env: dict[str, str]) -> dict[str, Any]:
    """bench/documents_submit.py in its own process, its PSS sampled every 20 ms."""
    cmd = [sys.executable, "-m", "bench.documents_submit", *map(str, paths)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE)
    sampler = Sampler(lambda: pss_mb(proc.pid, tree=False), 0.02)
    sampler.start()
    out, _ = proc.communicate()
    wall_s = time.perf_counter() - t0
    pss = sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"the submitting process failed (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    result.update(process_wall_s=round(wall_s, 3), peak_pss_mb=round(max(pss, default=0), 1))
    return result


# -- Redis ----------------------------------------------------------------------------------
def redis_usage(redis_url: str, prefix: str) -> dict[str, Any]:
    """MEMORY USAGE (SAMPLES 0: every element counted) of each key of `prefix`, by kind (the
    key's first part after the hash tag), with a sample key of each kind's fields."""
    import redis

    r = redis.Redis.from_url(redis_url)
    kinds: dict[str, dict[str, Any]] = defaultdict(lambda: {"keys": 0, "bytes": 0})
    for key in r.scan_iter(match="{" + prefix + "}*", count=1000):
        kind = key.decode().split("}:", 1)[1].split(":")[0]
        kinds[kind]["keys"] += 1
        kinds[kind]["bytes"] += int(r.memory_usage(key, samples=0) or 0)
        if kind == "job" and "fields" not in kinds[kind]:
            kinds[kind]["fields"] = {k.decode(): len(v) for k, v in r.hgetall(key).items()}
    info = r.info("memory")
    r.close()
    return {"by_kind": dict(kinds), "total_bytes": sum(k["bytes"] for k in kinds.values()),
            "used_memory": info.get("used_memory")}  # fmt: skip


def delete_prefix(redis_url: str, prefix: str) -> None:
    import redis

    r = redis.Redis.from_url(redis_url)
    for key in r.scan_iter(match="{" + prefix + "}*", count=1000):
        r.delete(key)
    r.close()


def bench_submit(args: argparse.Namespace, redis_url: str, tmp: Path) -> dict[str, Any]:
    paths = one_page_pdfs(args.documents)
    prefix = f"bench-docs-{uuid.uuid4().hex[:8]}"
    try:
        got = run_submit(paths, child_env(redis_url, prefix, tmp / "submit"))
        usage = redis_usage(redis_url, prefix)
    finally:
        delete_prefix(redis_url, prefix)
    queued = max(1, got["queued"])
    return {
        **got, "documents_per_s": round(got["documents"] / got["submit_s"], 1),
        "documents_per_s_whole_process": round(got["documents"] / got["process_wall_s"], 1),
        "redis_bytes_per_document": round(usage["total_bytes"] / queued),
        "redis_bytes_per_document_by_kind": {k: round(v["bytes"] / queued)
                                             for k, v in usage["by_kind"].items()},
        "redis_keys_by_kind": {k: v["keys"] for k, v in usage["by_kind"].items()},
        "job_hash_field_bytes": usage["by_kind"].get("job", {}).get("fields", {}),
    }  # fmt: skip


# -- worker memory ----------------------------------------------------------------------------
def _quiet(redis_url: str, prefix: str) -> bool:
    """No job of the run queued, scheduled, waiting or running."""
    import redis

    r = redis.Redis.from_url(redis_url)
    try:
        for key in r.scan_iter(match="{" + prefix + "}:job:*", count=1000):
            if r.hget(key, "state") in (b"queued", b"scheduled", b"waiting", b"active"):
                return False
        return True
    finally:
        r.close()


def bench_worker(args: argparse.Namespace, redis_url: str, tmp: Path) -> dict[str, Any]:
    from tests.support.emulator import start_emulator

    paths = large_pdfs(args.large, args.large_mb)
    prefix = f"bench-docs-{uuid.uuid4().hex[:8]}"
    latency = (args.latency_s, args.latency_s)
    try:
        with start_emulator(subprocess=True, latency_s=latency, rpm=10**6, tpm=10**12) as emu:
            env = child_env(redis_url, prefix, tmp / "worker", **emu.env,
                            PIPELINE_RPM="1000000", PIPELINE_TPM="1000000000000")  # fmt: skip
            env["GOOGLE_API_KEY"] = ""
            got = run_submit(paths, env)
            cmd = [sys.executable, "-m", "pipeline", "worker", "--concurrency",
                   str(args.concurrency), "--log-level", "WARNING"]  # fmt: skip
            log = (tmp / "worker.log").open("wb")
            worker = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
            time.sleep(2.0)
            idle = pss_mb(worker.pid)

            def probe() -> tuple[float, float, float, int, int]:
                stats = emu.stats()
                return (time.monotonic(), pss_mb(worker.pid), pss_mb(worker.pid, tree=False),
                        stats["in_flight"], stats["in_flight_bytes"])  # fmt: skip

            sampler = Sampler(probe, 0.25)
            sampler.start()
            deadline = time.monotonic() + args.timeout_s
            while not _quiet(redis_url, prefix):
                if worker.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(1.0)
            samples = sampler.stop()
            stats = emu.stats()
            worker.terminate()
            try:
                worker.wait(90)  # a graceful stop lets calls in flight finish
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    finally:
        delete_prefix(redis_url, prefix)
    if not any(s[3] for s in samples):
        raise SystemExit(f"no call was seen in flight; see {tmp / 'worker.log'}")
    peak = max(samples, key=lambda s: s[1])
    in_flight = [s for s in samples if s[3]]
    busiest = max(samples, key=lambda s: (s[4], s[1]))
    # The PDF bytes the generateContent calls in flight carried, inline or as uploaded files
    # (the emulator decodes both); an inline body is ~4/3 of its PDF (base64).
    pdf_in_flight = stats["peak_in_flight_data_bytes"]
    return {
        "documents": got["queued"], "pdf_mb_each": round(paths[0].stat().st_size / MB, 2),
        "concurrency": args.concurrency, "emulator_latency_s": args.latency_s,
        "generate_requests": stats["generate_requests"], "by_status": stats["by_status"],
        "peak_calls_in_flight": stats["peak_in_flight"],
        "peak_request_mb_in_flight": round(stats["peak_in_flight_bytes"] / MB, 1),
        "peak_pdf_mb_in_flight": round(pdf_in_flight / MB, 1),
        "files": stats["files"],  # Files API uploads, deletes and files left at the end
        "count_inline_mb": round(stats["count_inline_bytes"] / MB, 1),
        "count_file_parts": stats["count_file_parts"],
        "largest_request_kb": round(stats["largest_request_bytes"] / 1024, 1),
        "worker_idle_pss_mb": round(idle, 1),
        "worker_peak_pss_mb": round(peak[1], 1),
        "worker_peak_pss_main_process_mb": round(max(s[2] for s in samples), 1),
        "calls_in_flight_at_peak_pss": peak[3],
        "worker_pss_mb_at_most_bytes_in_flight": round(busiest[1], 1),
        "worker_peak_pss_mb_while_calls_in_flight": round(max(s[1] for s in in_flight), 1),
        "peak_pss_over_pdf_bytes_in_flight": round(peak[1] * MB / max(1, pdf_in_flight), 2),
        "run_s": round(samples[-1][0] - samples[0][0], 1),
        "submit_peak_rss_mb": got["peak_rss_mb"],
    }  # fmt: skip


# -- the manual -------------------------------------------------------------------------------
def _plan_manual(path: str, model: str) -> dict[str, Any]:
    """In a fresh process: what submit and the worker do with the manual before any call."""
    from bench.common import rss_mb
    from pipeline.settings import get_settings
    from tasks.pdf import inspect_pdf, split_pages
    from tasks.plan import analyze_prompt, analyze_request, chunk_ranges, part_room_bytes

    s, prompt = get_settings(), analyze_prompt()
    t0 = time.perf_counter()
    data = Path(path).read_bytes()
    room = part_room_bytes(model, prompt, "manual.pdf", s.max_inline_request_bytes)
    info = inspect_pdf(data, s.max_upload_bytes, s.max_document_pages, "manual.pdf", room)
    t1 = time.perf_counter()
    ranges = chunk_ranges(info.page_count, len(data), model, s.context_budget_tokens,
                          s.max_inline_request_bytes)  # fmt: skip
    parts = split_pages(data, ranges)
    sizes = [analyze_request(model, prompt, part, filename="manual.pdf",
                             page_count=info.page_count, first_page=a, last_page=b,
                             ).payload_bytes()
             for part, (a, b) in zip(parts, ranges, strict=True)]  # fmt: skip
    t2 = time.perf_counter()
    return {"pages": info.page_count, "mb": round(len(data) / MB, 2),
            "inspect_s": round(t1 - t0, 2), "plan_split_s": round(t2 - t1, 2),
            "total_s": round(t2 - t0, 2), "parts": len(ranges), "ranges": ranges,
            "largest_request_mb": round(max(sizes) / MB, 2),
            "peak_rss_mb": round(rss_mb(os.getpid(), "VmHWM"), 1)}  # fmt: skip


def bench_manual(args: argparse.Namespace) -> dict[str, Any]:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    path = manual(args.pages)
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(_plan_manual, str(path), args.model).result()


# -- the shared quota ---------------------------------------------------------------------------
def bench_limiter(args: argparse.Namespace) -> list[dict[str, Any]]:
    """bench/limiter.py's worker run, once per quota."""
    from bench.limiter import run_workers

    runs = []
    for rpm, jobs in ((10, args.jobs_10), (2000, args.jobs_2000)):
        ns = argparse.Namespace(workers=4, slots=args.slots, rpm=rpm, jobs=jobs, period_s=60.0,
                                emulator_rpm=rpm, latency_s=0.05, timeout_s=1800.0,
                                prefix=f"bench-{uuid.uuid4().hex[:8]}")  # fmt: skip
        t0 = time.monotonic()
        figures = run_workers(ns)
        figures["run_s"] = round(time.monotonic() - t0, 1)
        runs.append(figures)
    return runs


# -- the report ---------------------------------------------------------------------------------
TARGETS = {"redis_bytes_per_document": 2048, "worker_ratio": 1.5, "quota_share": 0.95}


def _print(figures: dict[str, Any]) -> None:
    from bench.limiter import describe_shares

    if "submit" in figures:
        f = figures["submit"]
        print(f"submit {f['documents']} one-page PDFs: {f['documents_per_s']:.0f} documents/s "
              f"in submit_uploads ({f['submit_s']:.2f} s; whole process "
              f"{f['process_wall_s']:.2f} s); submit process peak RSS {f['peak_rss_mb']} MB, "
              f"peak PSS {f['peak_pss_mb']} MB")  # fmt: skip
        per_doc = f["redis_bytes_per_document"]
        met = "met" if per_doc <= TARGETS["redis_bytes_per_document"] else "NOT met"
        print(f"Redis per queued document: {per_doc} bytes (target <= 2048: {met}); by key "
              f"kind: {f['redis_bytes_per_document_by_kind']}")  # fmt: skip
    if "worker" in figures:
        f = figures["worker"]
        met = "met" if f["peak_pss_over_pdf_bytes_in_flight"] <= TARGETS["worker_ratio"] else (
            "NOT met")
        print(f"worker, {f['documents']} PDFs of {f['pdf_mb_each']} MB, concurrency "
              f"{f['concurrency']}, emulator latency {f['emulator_latency_s']:g} s: peak "
              f"{f['peak_calls_in_flight']} calls in flight carrying {f['peak_pdf_mb_in_flight']} "
              f"MB of PDF ({f['peak_request_mb_in_flight']} MB of requests); worker peak PSS "
              f"{f['worker_peak_pss_mb']} MB (idle {f['worker_idle_pss_mb']} MB) = "
              f"{f['peak_pss_over_pdf_bytes_in_flight']} x the PDF bytes in flight "
              f"(target <= 1.5: {met})")  # fmt: skip
    if "manual" in figures:
        f = figures["manual"]
        print(f"manual of {f['pages']} pages ({f['mb']} MB): inspect {f['inspect_s']} s, plan "
              f"and split into {f['parts']} parts {f['plan_split_s']} s, total {f['total_s']} s, "
              f"peak RSS {f['peak_rss_mb']} MB")  # fmt: skip
    for f in figures.get("limiter", []):
        share = f["sustained_share_of_limit"]
        met = "met" if (share is not None and share >= TARGETS["quota_share"]
                        and f["rate_limited_429"] == 0) else "NOT met"  # fmt: skip
        print(f"limiter, 4 workers, quota {f['limit_rpm']}/min: {f['jobs']} jobs "
              f"{f['job_states']} in {f['run_s']} s; {describe_shares(f, f['limit_rpm'])}; "
              f"429s {f['rate_limited_429']} (target: sustained share >= 95 %, 0 x 429: "
              f"{met})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (~5 minutes)")
    parser.add_argument("--only", default="submit,worker,manual,limiter")
    parser.add_argument("--documents", type=int, default=1000, help="one-page PDFs to submit")
    parser.add_argument("--large", type=int, default=32, help="large PDFs for the worker run")
    parser.add_argument("--large-mb", type=float, default=14.0,
                        help="MB of each large PDF; 14 is the most whose one request fits "
                             "Gemini's 20 MB inline limit (base64 adds a third)")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-s", type=float, default=30.0, help="emulator answer delay")
    parser.add_argument("--pages", type=int, default=2415, help="pages of the manual")
    parser.add_argument("--model", default="gemini-3.5-flash-lite")
    parser.add_argument("--slots", type=int, default=50, help="limiter run: slots per worker")
    parser.add_argument("--jobs-10", type=int, default=30, help="limiter run at 10/min")
    parser.add_argument("--jobs-2000", type=int, default=4000, help="limiter run at 2,000/min")
    parser.add_argument("--timeout-s", type=float, default=900.0)
    args = parser.parse_args()
    if args.quick:
        args.documents, args.large, args.latency_s = 200, 8, 15.0
        args.jobs_10, args.jobs_2000 = 12, 2000
    only = set(args.only.split(","))
    load_before = os.getloadavg()
    redis_url, server = bench_redis_url()
    figures: dict[str, Any] = {"quick": args.quick, "redis": redis_url}
    tmp = Path(tempfile.mkdtemp(prefix="bench-documents-"))
    try:
        if "submit" in only:
            figures["submit"] = bench_submit(args, redis_url, tmp)
        if "worker" in only:
            figures["worker"] = bench_worker(args, redis_url, tmp)
        if "manual" in only:
            figures["manual"] = bench_manual(args)
        if "limiter" in only:
            figures["limiter"] = bench_limiter(args)
    finally:
        if server is not None:
            server.stop()
    figures["load_avg_before"] = [round(x, 2) for x in load_before]
    figures["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    _print(figures)
    print(f"load average before {figures['load_avg_before']}, after {figures['load_avg_after']}")
    print(f"figures written to {write_result('documents', figures)}")


if __name__ == "__main__":
    main()
