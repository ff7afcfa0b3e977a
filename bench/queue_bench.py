"""Queue core figures against a real Redis, each with a real `pipeline worker` process:

- enqueue->start latency (p50/p99) with an idle worker
- no-op jobs per second through one worker process
- idle worker RSS
- peak RSS of one worker process holding N concurrent jobs that each sleep 20 s

    python bench/queue_bench.py [--json] [--latency-samples 1000] [--noop-jobs 20000]
                          [--sleepers 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    bench_redis_url,
    percentile,
    rss_mb,
    start_worker,
    wait_until,
    write_result,
)
from pipeline.queue import JobOptions, QueueClient
from pipeline.redis.connection import connect_redis
from pipeline.redis.keys import Keys
from pipeline.settings import load_settings


async def _client(url: str, prefix: str) -> QueueClient:
    return QueueClient(connect_redis(url), Keys(prefix), load_settings(key_prefix=prefix))


async def _cleanup(client: QueueClient) -> None:
    async for key in client.redis.scan_iter(match="{" + client.keys.prefix + "}*", count=2000):
        await client.redis.unlink(key)
    await client.aclose()


async def _wait_worker(client: QueueClient) -> dict[str, Any]:
    for _ in range(400):
        workers = await client.workers()
        if workers:
            return workers[0]
        await asyncio.sleep(0.05)
    raise SystemExit("worker never registered")


async def latency(url: str, samples: int) -> dict[str, float]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    client = await _client(url, prefix)
    proc = start_worker(url, prefix, "--concurrency", "32")
    try:
        await _wait_worker(client)
        for _ in range(50):  # warm-up
            await (await client.enqueue("bench.stamp")).result(timeout_s=10)
        lat = []
        for _ in range(samples):
            t0 = time.time()
            started = await (await client.enqueue("bench.stamp")).result(timeout_s=10)
            lat.append((started - t0) * 1000)
        return {"enqueue_to_start_p50_ms": round(percentile(lat, 50), 3),
                "enqueue_to_start_p99_ms": round(percentile(lat, 99), 3), "samples": samples}
    finally:
        proc.terminate()
        proc.wait(30)
        await _cleanup(client)


async def throughput(url: str, jobs: int) -> dict[str, float]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    client = await _client(url, prefix)
    calls = [client._call("bench.noop", [], {}, JobOptions(queue="default"))
             for _ in range(jobs)]  # fmt: skip
    ids = [handle.id for handle in await client.enqueue_many(calls)]
    proc = start_worker(url, prefix, "--concurrency", "64", "--burst")
    try:
        proc.wait(600)
        async with client.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(client.keys.job(job_id), ["state", "started_ms", "finished_ms"])
            rows = await pipe.execute()
        done = [r for r in rows if r[0] == "complete"]
        first = min(int(r[1]) for r in done)
        last = max(int(r[2]) for r in done)
        seconds = (last - first) / 1000
        return {"noop_jobs": jobs, "completed": len(done),
                "noop_jobs_per_s": round(len(done) / seconds, 1) if seconds else 0.0}
    finally:
        await _cleanup(client)


async def enqueue_rate(url: str, jobs: int) -> dict[str, float]:
    """Jobs/s enqueued one by one (`enqueue`, a round trip each) and, where the client has
    it, in bulk (`enqueue_many`, one round trip per 1,000)."""
    out: dict[str, float] = {}
    for how in ("one_by_one", "many"):
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        client = await _client(url, prefix)
        calls = [client._call("bench.noop", [], {}, JobOptions(queue="default"))
                 for _ in range(jobs)]  # fmt: skip
        try:
            t0 = time.perf_counter()
            if how == "many":
                if not hasattr(client, "enqueue_many"):
                    continue
                await client.enqueue_many(calls)
            else:
                for call in calls:
                    await client.enqueue(call)
            out[f"enqueue_{how}_jobs_per_s"] = round(jobs / (time.perf_counter() - t0), 1)
        finally:
            await _cleanup(client)
    return out


async def memory(url: str, sleepers: int) -> dict[str, float]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    client = await _client(url, prefix)
    proc = start_worker(url, prefix, "--concurrency", str(sleepers))
    try:
        await _wait_worker(client)
        await asyncio.sleep(1.0)
        idle = rss_mb(proc.pid)
        sleep = client._call("bench.sleep", [20], {}, JobOptions(queue="default"))
        await client.enqueue_many([sleep] * sleepers)
        peak = idle
        t0 = time.monotonic()
        all_running = None
        while time.monotonic() - t0 < 120:
            peak = max(peak, rss_mb(proc.pid))
            active = await client.redis.zcard(client.keys.active)
            if all_running is None and active >= sleepers:
                all_running = time.monotonic() - t0
            if all_running is not None and active == 0:
                break
            await asyncio.sleep(0.25)
        return {"idle_worker_rss_mb": round(idle, 1), "sleepers": sleepers,
                "sleepers_peak_rss_mb": round(max(peak, rss_mb(proc.pid, "VmHWM")), 1),
                "seconds_to_claim_all_sleepers": round(all_running or -1, 2)}
    finally:
        proc.terminate()
        proc.wait(60)
        await _cleanup(client)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print the JSON result too")
    ap.add_argument("--latency-samples", type=int, default=1000)
    ap.add_argument("--noop-jobs", type=int, default=20000)
    ap.add_argument("--sleepers", type=int, default=10000)
    ap.add_argument("--only", default="latency,throughput,memory,enqueue",
                    help="comma-separated figures to measure")
    ap.add_argument("--redis-url", help="a private Redis (PIPELINE_BENCH_REDIS_URL is refused "
                    "by the settings' unknown-variable check)")
    args = ap.parse_args()
    only = set(args.only.split(","))
    url, server = (args.redis_url, None) if args.redis_url else bench_redis_url()
    try:
        figures: dict[str, Any] = {"redis": url.split("@")[-1]}
        if "latency" in only:
            figures |= await latency(url, args.latency_samples)
        if "throughput" in only:
            figures |= await throughput(url, args.noop_jobs)
        if "memory" in only:
            figures |= await memory(url, args.sleepers)
        if "enqueue" in only:
            figures |= await enqueue_rate(url, args.noop_jobs)
        figures["loadavg_1m"] = round(os.getloadavg()[0], 2)
    finally:
        if server is not None:
            server.stop()
    path = write_result("queue", figures)
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    print(f"written to {path}")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    _ = wait_until
    asyncio.run(main())
