"""Shared bits of the benchmark scripts: which Redis, worker processes, RSS, JSON output."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def bench_redis_url() -> tuple[str, Any]:
    """PIPELINE_BENCH_REDIS_URL, else 127.0.0.1:6379 if it answers, else the embedded server."""
    url = os.environ.get("PIPELINE_BENCH_REDIS_URL")
    if url:
        return url, None
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.3):
            return "redis://127.0.0.1:6379/0", None
    except OSError:
        pass
    from pipeline.redis.server import EmbeddedRedis

    server = EmbeddedRedis(ROOT / ".pipeline" / "bench")
    server.start()
    return server.url, server


def start_worker(redis_url: str, prefix: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    full_env.update({"PIPELINE_REDIS_URL": redis_url, "PIPELINE_KEY_PREFIX": prefix,
                     "PYTHONPATH": str(ROOT), **env})
    cmd = [sys.executable, "-m", "pipeline", "worker", "--import", "bench.bench_tasks",
           "--log-level", "WARNING", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=full_env)


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def write_result(name: str, figures: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"bench": name, "date": datetime.now(UTC).isoformat(timespec="seconds"),
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
           "figures": figures}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(out, indent=2))
    return path


def wait_until(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"benchmark gave up waiting for {what}")
        time.sleep(0.05)
