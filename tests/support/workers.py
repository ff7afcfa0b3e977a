"""`pipeline worker` as a real subprocess, and the fast test timings (FAST) it and in-process
clients share: short leases, sweeps and heartbeats, so failure paths play out in seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from pipeline.settings import Settings, load_settings
from tests.support import ROOT, forkserver

FAST = {
    "min_lease_s": 0.5,
    "sweep_interval_s": 0.1,
    "heartbeat_interval_s": 0.5,
    "shutdown_grace_s": 1.0,
}


def fast_settings(prefix: str, **extra: Any) -> Settings:
    return load_settings(key_prefix=prefix, **{**FAST, **extra})


def worker_env(redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env.update(
        {
            "PIPELINE_REDIS_URL": redis_url,
            "PIPELINE_KEY_PREFIX": prefix,
            "PIPELINE_MIN_LEASE_S": str(FAST["min_lease_s"]),
            "PIPELINE_SWEEP_INTERVAL_S": str(FAST["sweep_interval_s"]),
            "PIPELINE_HEARTBEAT_INTERVAL_S": str(FAST["heartbeat_interval_s"]),
            "PIPELINE_SHUTDOWN_GRACE_S": str(FAST["shutdown_grace_s"]),
            "PIPELINE_CPU_WORKERS": "1",
            "PYTHONPATH": str(ROOT),
        }
    )
    env.update(extra)
    return env


class WorkerProcess:
    """`pipeline worker` as a process of its own (forked from a server that has imported the
    worker's modules, tests/support/forkserver.py), ended by pid. `env` may be a whole test
    environment (a `pipeline_env` with the emulator's): its Redis URL and key prefix are
    this worker's own arguments, whatever `env` says."""

    def __init__(
        self,
        redis_url: str,
        prefix: str,
        *args: str,
        imports: Sequence[str] = ("tests.support.queue_tasks",),
        **env: str,
    ) -> None:
        modules = [flag for name in imports for flag in ("--import", name)]
        cmd = [sys.executable, "-m", "pipeline", "worker", *modules, *args]
        own = ("PIPELINE_REDIS_URL", "PIPELINE_KEY_PREFIX")
        env = {k: v for k, v in env.items() if k not in own}
        # Appending: the worker shares this file's offset, so without O_APPEND a line it
        # writes while `output()` has seeked to 0 lands over the start of the log (seen: a
        # start-up line overwritten by a job's line, and a test failing on it).
        self.log = open(f"/tmp/pipeline-worker-{prefix}-{time.monotonic_ns()}.log", "a+")
        full = worker_env(redis_url, prefix, **env)
        self.proc: subprocess.Popen[bytes] | forkserver.ForkedProcess = forkserver.popen(
            cmd[3:], full, ROOT, ROOT, profile="worker", stdout=self.log,
            stderr=subprocess.STDOUT,
        ) or subprocess.Popen(cmd, cwd=ROOT, env=full, stdout=self.log, stderr=subprocess.STDOUT)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def close(self) -> None:
        self.kill()
        self.log.close()
