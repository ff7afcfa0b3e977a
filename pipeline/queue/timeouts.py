"""Running jobs' timeouts on one event-loop timer.

A loop timer per running job cost ~600 B a job on uvloop (the loop the worker ran on until
2026-12-01; ~150 B on asyncio's), a third of what a sleeping job
held in the worker (its TimerHandle, a libuv timer and a copied context; tracemalloc, README
"memory per waiting slow job"). Here the running jobs wait in a heap ordered by deadline,
8 bytes a job, and one timer is armed for the earliest. A job whose body ends leaves the heap
at once (a scan of the running jobs, a few dozen, next to a job's seconds of work): an ended
entry left for later held its job, arguments and all (60 settled jobs of 1 MB arguments
kept 60 MB in a review probe).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable

from pipeline.queue.shutdown import Running

log = logging.getLogger("pipeline.worker")

# A loop may run a timer a little short of the deadline it was armed for (asyncio's within
# its clock resolution, uvloop's up to 1 ms: it keeps time in whole milliseconds). A
# deadline that close counts as reached, as the per-job timer it replaces did, rather than
# spinning the loop until the clock ticks over.
DUE_WITHIN_S = 0.001


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

    def add(self, running: Running, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        running.deadline = loop.time() + timeout_s
        heapq.heappush(self._heap, running)
        if running.deadline < self._armed_at:
            self._arm(loop, running.deadline)

    def ended(self, running: Running) -> None:
        """A job's body ended: it leaves the heap (the timer, if armed for it, finds the next
        deadline when it fires). A job not in the heap (no timeout added) is ignored."""
        heap = self._heap
        for i, entry in enumerate(heap):
            if entry is running:  # by identity: entries compare by deadline
                heap[i] = heap[-1]
                heap.pop()
                heapq.heapify(heap)
                return

    def close(self) -> None:
        """Stop the timer and forget every entry (the worker has stopped)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._armed_at = None, float("inf")
        self._heap.clear()

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
        while heap and heap[0].deadline <= due:  # an ended job has left (ended())
            running = heapq.heappop(heap)
            try:
                self.expire(running)
            except Exception:  # one job's halt failing must not lose every later timeout
                log.exception("job %s: its timeout could not stop it", running.job.id)
        if heap:
            self._arm(loop, heap[0].deadline)
