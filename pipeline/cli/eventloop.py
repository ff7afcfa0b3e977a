"""The event loop the long-lived commands (`pipeline worker`, `pipeline run`) run on:
asyncio's own.

Why not uvloop, which these commands ran on until 2026-12-01: in this product a worker mostly
holds jobs that wait (a Gemini call, a batch job), and on uvloop each waiting job's own timer
(its `asyncio.sleep`, an SDK's timeout) costs ~540 B against ~230 B on asyncio's loop
(tracemalloc). Measured side by side on a quiet machine (`python bench/peers.py --quick
--systems pipeline --figures latency,slow-job-memory --reps 5 --no-traps`, each loop in turn,
2026-12-01 02:50 UTC): memory per waiting slow job 1.90 KB (1.40-2.20) on uvloop against 1.50
KB (1.30-1.50) on asyncio's loop, enqueue->start p50 0.62 ms on both, p99 1.34 / 1.30 ms.
uvloop's one lead is no-op throughput (~8,500 against ~7,300 jobs/s a process, both far above
the jobs a worker of slow calls runs), which this workload never needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`: runs `main` on a new asyncio event loop; returns what it returns."""
    return asyncio.run(main)
