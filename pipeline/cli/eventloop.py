"""The event loop long-lived commands (`pipeline worker`, `pipeline run`) run on: uvloop where
it is installed (Linux and macOS), else asyncio's own.

Why: an idle worker's enqueue→start latency is spent mostly waking up, and uvloop's loop
(libuv, in C) wakes and dispatches a ready socket with far fewer instructions than asyncio's
selector loop. Measured here (`python bench/peers.py --quick --systems pipeline,saq --figures
latency --reps 3`, 2026-11-30): p50 0.72 → 0.61 ms, p99 21.7 → 1.36 ms; no-op jobs/s and CPU
per job level; idle worker PSS +2 MB (38.1 vs 36.0 MB). The HTTP API gets it from uvicorn,
which picks uvloop by itself when it is installed.
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
