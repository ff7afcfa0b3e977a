"""A worker's liveness, kept off its event loop: lease renewal, the heartbeat, and a watch on
the loop itself, from one thread with its own synchronous Redis connection.

A lease renewed from the job's own event loop is only as alive as that loop: a task that
blocks it (a synchronous SDK call, CPU work inline) for longer than its lease was declared
dead, re-run elsewhere, and its finished result refused as fenced (field case 01 B). From a
thread, renewals and heartbeats go on while the loop is blocked; fencing is unchanged (a
renewal still carries the claim's token, and a job whose token went stale is still halted).

The watch is asyncio's slow-callback warning (loop.slow_callback_duration in debug mode) made
permanent and specific: the thread posts a no-op to the loop every tick, and when it has not
run after `blocked_after_s`, it logs which task's code is on the loop thread's stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis as syncredis

from pipeline.queue import heartbeat
from pipeline.queue.lease import LeaseBook
from pipeline.queue.task import REGISTRY
from pipeline.redis.keys import Keys

log = logging.getLogger("pipeline.worker")

Halt = Callable[[str, str], None]  # (job id, reason: lost | cancel), run on the event loop


def tick_s(min_lease_s: float) -> float:
    """How often the liveness thread renews what is due and looks for cancel requests: a
    sixth of the shortest lease, between 50 ms and 1 s. A running job whose cancellation was
    requested is stopped within one tick (plus its worker's loop turn)."""
    return max(0.05, min(1.0, min_lease_s / 6))


@dataclass
class Presence:
    """What the heartbeat says about the worker; `stopping` is set by the worker's loop."""

    worker_id: str
    queues: list[str]
    concurrency: int
    interval_s: float
    started_ms: int
    stopping: bool = False


class Liveness:
    """Renews `leases` every `tick_s`, beats every `presence.interval_s`, and watches `loop`.

    `halt(job_id, reason)` is scheduled on the loop for a job whose lease went stale ("lost")
    or whose cancellation was requested ("cancel"). Redis errors are logged (once per
    outage) and retried next tick. `start()` from the loop's thread; `stop()` joins the thread
    and closes its connection (call it through asyncio.to_thread)."""

    def __init__(
        self,
        redis: syncredis.Redis,
        keys: Keys,
        presence: Presence,
        halt: Halt,
        *,
        tick_s: float,
        blocked_after_s: float = 1.0,
    ) -> None:
        self.redis, self.keys, self.presence, self.halt = redis, keys, presence, halt
        self.leases = LeaseBook(redis, keys)
        self.tick_s = tick_s
        self.blocked_after_s = blocked_after_s
        self.blocked_warnings = 0  # how many blocked-loop episodes were logged
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._ping_sent: float | None = None  # when the unanswered ping was posted
        self._warned_ping: float | None = None
        self._warned_blocker = ""
        self._failing: dict[str, bool] = {}
        self._beat_at = -1e9

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._thread = threading.Thread(
            target=self._run, name=f"liveness-{self.presence.worker_id}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.redis.close()

    # -- the thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._done.is_set():
            self._watch()
            self._guard("lease", self._renew)
            if time.monotonic() - self._beat_at >= self.presence.interval_s:
                self._guard("heartbeat", self._beat)
            self._done.wait(self.tick_s)

    def _guard(self, what: str, fn: Callable[[], None]) -> None:
        """Run one duty; log the first error of an outage and its end, not every tick."""
        try:
            fn()
        except Exception as exc:
            if not self._failing.get(what):
                log.warning("liveness thread (%s): %s; retrying each tick", what, exc)
            self._failing[what] = True
            return
        if self._failing.pop(what, False):
            log.info("liveness thread (%s): Redis answers again", what)

    def _renew(self) -> None:
        stale, cancel = self.leases.renew_due()
        cancel = list(dict.fromkeys([*cancel, *self.leases.cancel_requested()]))
        for job_id in stale:
            self._post(self.halt, job_id, "lost")
        for job_id in cancel:
            self._post(self.halt, job_id, "cancel")

    def _beat(self) -> None:
        p = self.presence
        heartbeat.beat(
            self.redis,
            self.keys,
            p.worker_id,
            queues=p.queues,
            concurrency=p.concurrency,
            jobs=[lease.job.id for lease in self.leases.snapshot()],
            interval_s=p.interval_s,
            started_ms=p.started_ms,
            state="stopping" if p.stopping else "running",
        )
        self._beat_at = time.monotonic()

    def _post(self, fn: Callable[..., None], *args: str) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop closed while the worker shut down
            pass

    # -- the watch on the event loop -------------------------------------------------------
    def _pong(self) -> None:
        sent, self._ping_sent = self._ping_sent, None
        if sent is not None and self._warned_ping == sent:
            log.warning(
                "event loop unblocked after %.1fs (blocked by %s); leases and heartbeats were "
                "renewed from the liveness thread meanwhile",
                time.monotonic() - sent,
                self._warned_blocker,
            )

    def _watch(self) -> None:
        now = time.monotonic()
        sent = self._ping_sent
        if sent is None:
            self._ping_sent = now
            self._post(self._pong)
            return
        if now - sent >= self.blocked_after_s and self._warned_ping != sent:
            self._warned_ping, self._warned_blocker = sent, self.blocker()
            self.blocked_warnings += 1
            log.warning(
                "event loop blocked for %.1fs by %s; every other job on this worker waits "
                "meanwhile. Make the task a plain `def` (it then runs in a thread), or move "
                "the blocking part to `await asyncio.to_thread(...)` or `ctx.run_cpu(...)`",
                now - sent,
                self._warned_blocker,
            )

    def blocker(self) -> str:
        """Which task's code the loop thread is running now, from its stack, with file:line."""
        frame = sys._current_frames().get(self._loop_thread)
        top = frame
        codes = {}
        for lease in self.leases.snapshot():
            task = REGISTRY.get(lease.job.task)
            code = getattr(task.fn, "__code__", None) if task is not None else None
            if code is not None:
                codes[code] = lease
        while frame is not None:
            held = codes.get(frame.f_code)
            if held is not None:
                where = f"{frame.f_code.co_filename}:{frame.f_lineno}"
                return f"task {held.job.task} (job {held.job.id}) at {where}"
            frame = frame.f_back
        if top is None:
            return "an unknown callback"
        return f"code outside any task, at {top.f_code.co_filename}:{top.f_lineno}"


async def every(name: str, fn: Callable[[], Awaitable[None]], every_s: float,
                done: asyncio.Event) -> None:  # fmt: skip
    """Upkeep on the event loop (sweeping, the ledger flusher): run `fn` every `every_s`
    (jittered) until `done`; an error is logged and the loop carries on. Ends on the event, not
    on cancellation alone: a client library that retries through a cancelled call must not
    leave the loop running."""
    while not done.is_set():
        try:
            await fn()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s loop: %s", name, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), every_s * random.uniform(0.8, 1.2))
