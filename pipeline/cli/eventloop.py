"""The event loop long-lived commands (`pipeline worker`, `pipeline run`) run on: uvloop where
it is installed (Linux and macOS), else asyncio's own.

Why: uvloop's loop (libuv, in C) wakes and dispatches a ready socket with fewer instructions
than asyncio's selector loop, and a worker's every job is a few such wake-ups. Measured here
with `python bench/peers.py --quick --systems pipeline,saq --figures latency,throughput --reps 3`,
asyncio's loop and uvloop's interleaved twice (2026-11-30, load 1.4-2.3): enqueue→start p99
3.05 / 3.53 → 1.65 / 1.90 ms, p50 within the noise (1.02 / 0.78 → 1.01 / 0.88 ms), no-op
jobs/s 3,960 / 3,948 → 5,337 / 4,142, worker CPU per job 0.23 / 0.25 → 0.16 / 0.22 ms; idle
worker PSS +2 MB (38.1 vs 36.0 MB). The HTTP API gets it from uvicorn, which picks uvloop by
itself when it is installed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's `new_event_loop`, or None (asyncio's default) where uvloop is not installed."""
    try:
        import uvloop
    except ImportError:  # Windows, or an install without it: asyncio's loop works the same
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the loop `loop_factory` gives; returns what `main` returns."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
