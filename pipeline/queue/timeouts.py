"""Running jobs' timeouts on one event-loop timer.

A loop timer per running job cost ~600 B a job on uvloop, a third of what a sleeping job
held in the worker (its TimerHandle, a libuv timer and a copied context; tracemalloc, README
"memory per waiting slow job"). Here the running jobs wait in a heap ordered by deadline,
8 bytes a job, and one timer is armed for the earliest. A job whose body ends stays in the
heap, ignored, until it reaches the top or the heap is compacted (more than half of it
ended), so ending a job costs no heap operation; jobs of one task end roughly in the order
their deadlines fall, so most leave from the top.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable

from pipeline.queue.shutdown import Running

log = logging.getLogger("pipeline.worker")

# uvloop keeps time in whole milliseconds: a timer can run while loop.time() is up to 1 ms
# short of the deadline it was armed for. A deadline that close counts as reached, as the
# per-job timer it replaces did, rather than spinning the loop until the clock ticks over.
DUE_WITHIN_S = 0.001
COMPACT_MIN = 64  # ended entries tolerated in any case: a compaction is not worth fewer


class Timeouts:
    """`add(running, timeout_s)` when a job's body starts; `expire(running)` is called on the
    loop at its deadline (loop time + timeout_s) unless its body has ended by then
    (`running.settling`). Whether the job is still the one to stop (not a later claim of the
    same id) is for `expire` to decide. Loop thread only."""

    def __init__(self, expire: Callable[[Running], None]) -> None:
        self.expire = expire
        self._heap: list[Running] = []  # Running orders by deadline
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = float("inf")
        self._ended = 0  # entries whose body ended, give or take (a compaction recounts)

    def add(self, running: Running, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        running.deadline = loop.time() + timeout_s
        heapq.heappush(self._heap, running)
        if running.deadline < self._armed_at:
            self._arm(loop, running.deadline)

    def ended(self) -> None:
        """A job's body ended (`settling` is set): drop ended entries from the top, and
        compact the heap when ended ones are most of it."""
        self._ended += 1
        heap = self._heap
        while heap and heap[0].settling:
            heapq.heappop(heap)
            self._ended -= 1
        if self._ended > COMPACT_MIN and self._ended * 2 > len(heap):
            self._heap = [r for r in heap if not r.settling]
            heapq.heapify(self._heap)
            self._ended = 0

    def close(self) -> None:
        """Stop the timer and forget every entry (the worker has stopped)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._armed_at = None, float("inf")
        self._heap.clear()
        self._ended = 0

    def __len__(self) -> int:
        return len(self._heap)

    def _arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._armed_at = loop.call_at(deadline, self._fire), deadline

    def _fire(self) -> None:
        self._timer, self._armed_at = None, float("inf")
        loop = asyncio.get_running_loop()
        heap, due = self._heap, loop.time() + DUE_WITHIN_S
        while heap and (heap[0].settling or heap[0].deadline <= due):
            running = heapq.heappop(heap)
            if running.settling:
                self._ended -= 1
                continue
            try:
                self.expire(running)
            except Exception:  # one job's halt failing must not lose every later timeout
                log.exception("job %s: its timeout could not stop it", running.job.id)
        if heap:
            self._arm(loop, heap[0].deadline)
