"""Graceful shutdown of a worker: the first SIGTERM/SIGINT stops claiming and gives running
jobs `shutdown_grace_s`; the second (or the grace's end) releases them to their queues at
once; a third exits the process. A released job goes back to its queue (outcome.py's
"release") for any worker to take.

`GracefulShutdown` is the Worker's half that does this (worker.py); it reads the worker's
running jobs and settings and calls its `stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipeline.queue.context import JobContext

if TYPE_CHECKING:
    from pipeline.queue.client import QueueClient

log = logging.getLogger("pipeline.worker")


@dataclass(slots=True, eq=False)  # one per running job; kept in Timeouts' heap by deadline
class Running(JobContext):
    """A running job: the context its task gets, its lease (lease.Lease) and the body's
    done callback (`on_end(self)`), one object (a context, an entry and a lease of their own
    were ~180 B more a running job). `task` is its body (a task, or a plain function's
    future), set once started, until the body ends, then the task settling it.

    The fields below JobContext's are the worker's own: a task reads its `ctx` as a
    JobContext and never writes them (its timeout, halting and lease renewal read them)."""

    # unset until the worker stores the body it started, when a plain function's thread may
    # already run and show its `ctx`: not in the repr, which would raise meanwhile
    task: asyncio.Future[Any] = field(init=False, repr=False)
    renewed_at: float = field(default=0.0, init=False)  # monotonic seconds (lease.py)
    stop_reason: str | None = None  # cancel | shutdown | lost | timeout
    settling: bool = False  # the task body is over; only its settlement is left
    deadline: float = 0.0  # loop time when its timeout stops it (timeouts.py)
    on_end: Callable[[Running], None] | None = None

    __eq__ = object.__eq__  # one job's entry is itself only (JobContext compares fields)
    __hash__ = object.__hash__

    def __lt__(self, other: Running) -> bool:
        return self.deadline < other.deadline

    def __call__(self, body: asyncio.Future[Any]) -> None:
        if self.on_end is not None:
            self.on_end(self)


class GracefulShutdown:
    """Signals, the grace period and the release of running jobs, for `Worker`."""

    client: QueueClient
    running: dict[str, Running]
    _signals: int
    _insisting: set[asyncio.Task[None]]

    def stop(self) -> None:
        raise NotImplementedError

    signalled_at: datetime | None = None  # when the first SIGTERM/SIGINT came (aware UTC)

    @property
    def signalled(self) -> bool:
        """Whether SIGTERM/SIGINT asked this worker to stop (not `stop()` or a burst's end)."""
        return self._signals > 0

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal)

    def _on_signal(self) -> None:
        self._signals += 1
        if self._signals == 1:
            self.signalled_at = datetime.now(UTC)
            log.warning(
                "stopping: no new jobs; %d running get %.0fs to finish (signal again to "
                "release them now, cutting off what they are doing)",
                len(self.running),
                self.client.settings.shutdown_grace_s,
            )
            self.stop()
        elif self._signals == 2:
            log.warning("releasing %d running jobs back to their queues now, cutting off what "
                        "they are doing", len(self.running))  # fmt: skip
            for job_id in list(self.running):
                self._halt(job_id, "shutdown")
        else:
            os._exit(130)

    async def _drain(self) -> None:
        """Grace period for running jobs, then release the rest to their queues at once, and
        wait (at most 30 s) until every one is settled: a job's body and its settlement are
        two tasks one after the other (Running.task), so it waits until none is left."""
        tasks = [r.task for r in self.running.values()]
        if tasks and self._signals < 2:
            await asyncio.wait(tasks, timeout=self.client.settings.shutdown_grace_s)
        for job_id in list(self.running):
            self._halt(job_id, "shutdown")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while self.running and (left := deadline - loop.time()) > 0:
            pending = [r.task for r in self.running.values() if not r.task.done()]
            if pending:
                await asyncio.wait(pending, timeout=left)
            else:  # ended, their done callbacks not run yet: a turn for them, not a spin
                await asyncio.sleep(0.01)

    def _halt(self, job_id: str, reason: str) -> None:
        running = self.running.get(job_id)
        if running is not None and running.stop_reason is None and not running.settling:
            running.stop_reason = reason
            running.task.cancel()
            self._insisting.add(asyncio.get_running_loop().create_task(self._insist(running)))

    async def _insist(self, running: Running) -> None:
        """Re-deliver the cancellation until the job's body has stopped: a library call that
        swallows CancelledError (redis-py retrying through a cancelled read does, rarely) must
        not leave a cancelled job running."""
        for _ in range(300):
            await asyncio.sleep(0.1)
            if running.task.done() or running.settling:
                break
            running.task.cancel()
        self._insisting.discard(asyncio.current_task())  # type: ignore[arg-type,unused-ignore]

    # -- claiming --------------------------------------------------------------------------
