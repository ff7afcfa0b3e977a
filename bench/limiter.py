"""Benchmark the shared bucket: Redis round trips per second, and achieved vs allowed rate.

    python bench/limiter.py [--processes 4] [--coroutines 50] [--rpm 600] [--period-s 5]
                            [--duration-s 15] [--redis redis://127.0.0.1:6379/0]

Several processes, each with many coroutines, take permits for one model as fast as the
bucket allows. Printed: try_acquire calls per second from one client, the grants per
second achieved as a share of the limit, and the most grants seen in any one period-long
window (which must stay at or under the limit). Uses its own random key prefix and
deletes its keys afterwards; never flushes anything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import sys
import time
import uuid
from pathlib import Path

# Import from the checkout, and keep bench/ itself off the path so nothing in it shadows a module.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import redis.asyncio as aioredis  # noqa: E402

from pipeline.errors import RateLimited  # noqa: E402
from pipeline.llm.limiter import Limiter, Permit  # noqa: E402
from pipeline.queue.keys import Keys  # noqa: E402
from pipeline.settings import load_settings  # noqa: E402

MODEL = "bench-model"


def _limiter(client: aioredis.Redis, args: argparse.Namespace) -> Limiter:
    settings = load_settings(rpm=args.rpm, tpm=10**9, rpd=10**9, max_concurrent_calls=10**6)
    return Limiter(client, Keys(args.prefix), settings, period_s=args.period_s)


async def _worker(args: argparse.Namespace, start_at: float) -> list[float]:
    client = aioredis.Redis.from_url(args.redis)
    limiter = _limiter(client, args)
    grants: list[float] = []
    await asyncio.sleep(max(0.0, start_at - time.time()))  # all processes start together
    stop_at = start_at + args.duration_s

    async def one() -> None:
        while time.time() < stop_at:
            try:
                left_s = max(0.01, stop_at - time.time())
                permit = await limiter.acquire(MODEL, 1, deadline_s=left_s)
            except RateLimited:
                return
            grants.append(permit.granted_at_ms)
            await limiter.release(permit)

    await asyncio.gather(*(one() for _ in range(args.coroutines)))
    await client.aclose()
    return grants


def _process(args: argparse.Namespace, start_at: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    out.put(json.dumps(asyncio.run(_worker(args, start_at))))


async def _round_trips(args: argparse.Namespace) -> float:
    client = aioredis.Redis.from_url(args.redis)
    limiter = _limiter(client, args)
    n, t0 = 2000, time.perf_counter()
    for _ in range(n):
        got = await limiter.try_acquire(MODEL + "-rt", 1)
        if isinstance(got, Permit):
            await limiter.release(got, sent=False)
    rate = n / (time.perf_counter() - t0)
    await client.aclose()
    return rate


async def _cleanup(args: argparse.Namespace) -> None:
    client = aioredis.Redis.from_url(args.redis)
    async for key in client.scan_iter(match="{" + args.prefix + "}*"):
        await client.delete(key)
    await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--coroutines", type=int, default=50)
    parser.add_argument("--rpm", type=int, default=600, help="requests per period")
    parser.add_argument("--period-s", type=float, default=5.0)
    parser.add_argument("--duration-s", type=float, default=15.0)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    args.prefix = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        print(f"try_acquire+release pairs/s, one client: {asyncio.run(_round_trips(args)):,.0f}")
        ctx = mp.get_context("spawn")
        out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
        start_at = time.time() + 2.0
        procs = [ctx.Process(target=_process, args=(args, start_at, out))
                 for _ in range(args.processes)]
        for p in procs:
            p.start()
        grants = sorted(g for _ in procs for g in json.loads(out.get()))
        for p in procs:
            p.join()
    finally:
        asyncio.run(_cleanup(args))
    span_s = (grants[-1] - grants[0]) / 1000
    period_ms = args.period_s * 1000
    worst = max(
        sum(1 for g in grants[i:] if g < start + period_ms) for i, start in enumerate(grants)
    )
    allowed_per_s = args.rpm / args.period_s
    print(f"{args.processes} processes x {args.coroutines} coroutines, "
          f"limit {args.rpm} per {args.period_s:g} s, {args.duration_s:g} s run")
    print(f"grants: {len(grants)}; achieved {(len(grants) - 1) / span_s:.2f}/s = "
          f"{(len(grants) - 1) / span_s / allowed_per_s:.1%} of the limit")
    print(f"most grants in any {args.period_s:g} s window: {worst} (limit {args.rpm})")


if __name__ == "__main__":
    main()
