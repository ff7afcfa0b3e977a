"""Where a no-op job's time goes: round trips and Redis commands per job, and a profile.

Runs one worker in this process (so its sends can be counted; pipeline/redis/wire.py's direct
sends bypass that count, Redis's own `total_reads_processed` does not) against a private
`redis-server` on a free port, on N pre-enqueued no-op jobs, `--burst` style:

    python bench/queue_profile.py [--jobs 5000] [--concurrency 64] [--profile out.pstats]

CPU per job is this process's CPU time over the run (the worker and its liveness thread),
the steadier figure on a busy machine. Round trips are counted at redis-py's connection
send (a pipeline is one), on the event loop's connections and the liveness thread's;
commands are `INFO commandstats` deltas, including those a Lua script calls.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis as syncredis
import redis.asyncio.connection as aconn
import redis.connection as sconn

SENDS: Counter[str] = Counter()


def _count_sends() -> None:
    a_send = aconn.AbstractConnection.send_packed_command
    s_send = sconn.AbstractConnection.send_packed_command

    async def a_counted(self: Any, command: Any, check_health: bool = True) -> None:
        SENDS["async"] += 1
        await a_send(self, command, check_health)

    def s_counted(self: Any, command: Any, check_health: bool = True) -> None:
        SENDS["sync"] += 1
        s_send(self, command, check_health)

    aconn.AbstractConnection.send_packed_command = a_counted  # type: ignore[method-assign]
    sconn.AbstractConnection.send_packed_command = s_counted  # type: ignore[method-assign]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _commandstats(r: syncredis.Redis) -> dict[str, int]:
    info = r.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


async def _run(
    url: str, jobs: int, concurrency: int, prof: cProfile.Profile | None
) -> dict[str, Any]:
    import bench.bench_tasks  # noqa: F401  (registers bench.noop)
    from pipeline.queue import JobOptions, QueueClient
    from pipeline.queue.worker import Worker
    from pipeline.redis.connection import connect_redis
    from pipeline.redis.keys import Keys
    from pipeline.settings import load_settings

    prefix = f"prof-{uuid.uuid4().hex[:6]}"
    settings = load_settings(key_prefix=prefix)
    client = QueueClient(connect_redis(url), Keys(prefix), settings)
    calls = [client._call("bench.noop", [], {}, JobOptions(queue="default")) for _ in range(jobs)]
    if hasattr(client, "enqueue_many"):
        await client.enqueue_many(calls)
    else:
        for c in calls:
            await client.enqueue(c)
    sync = syncredis.Redis.from_url(url)
    before, sends0 = _commandstats(sync), dict(SENDS)
    reads0 = int(sync.info("stats")["total_reads_processed"])
    worker = Worker(client, queues=["default"], concurrency=concurrency, burst=True)
    t0, cpu0 = time.perf_counter(), time.process_time()
    if prof:
        prof.enable()
    await worker.run(install_signals=False)
    if prof:
        prof.disable()
    seconds, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    reads = int(sync.info("stats")["total_reads_processed"]) - reads0 - 2  # our 2 INFO calls
    after = _commandstats(sync)
    delta = {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}
    await client.aclose()
    trips = {k: round((SENDS[k] - sends0.get(k, 0)) / jobs, 3) for k in SENDS}
    commands = {k: round(v / jobs, 3) for k, v in sorted(delta.items(), key=lambda kv: -kv[1])}
    return {"jobs": jobs, "completed": worker.counters.completed, "seconds": round(seconds, 3),
            "jobs_per_s": round(jobs / seconds, 1),
            # CPU time of this process (the worker, its liveness thread): steadier than wall
            # time on a busy machine
            "worker_cpu_ms_per_job": round(cpu_s * 1000 / jobs, 4), "round_trips_per_job": trips,
            # what Redis read from its clients per job: every round trip, however it was sent
            "redis_reads_per_job": round(reads / jobs, 3),
            "commands_per_job": commands}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--jobs", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--profile", help="write cProfile stats here")
    args = ap.parse_args()
    _count_sends()
    port, folder = _free_port(), tempfile.mkdtemp(prefix="prof-redis-")
    server = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port),
                               "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                               "--dir", folder], stdout=subprocess.DEVNULL)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        for _ in range(100):
            try:
                syncredis.Redis.from_url(url).ping()
                break
            except syncredis.ConnectionError:
                time.sleep(0.05)
        prof = cProfile.Profile() if args.profile else None
        out = asyncio.run(_run(url, args.jobs, args.concurrency, prof))
        if prof:
            prof.dump_stats(args.profile)
        out["loadavg"] = os.getloadavg()
        for k, v in out.items():
            print(f"{k}: {v}")
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
