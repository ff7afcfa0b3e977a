"""The worker loop: claim a job only when a slot is free and the gate admits it, run it under
a renewed lease, and settle it with the claim's fencing token.

A worker never holds a job it cannot start now (prefetch of one per free slot), so waiting
happens in Redis where every worker sees it. Lease renewal and heartbeats run on a thread of
their own (liveness.py), so a task that blocks the event loop cannot make its worker look
dead; plain `def` tasks run in a thread pool. Other upkeep (sweeping, the ledger flusher)
runs as small independent loops on the event loop that log errors and carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from pipeline.queue import heartbeat, joblog, registry
from pipeline.queue.batcher import ScriptBatcher
from pipeline.queue.client import QueueClient
from pipeline.queue.context import JobContext
from pipeline.queue.gate import Admission, Candidate, Gate, OpenGate
from pipeline.queue.handoff import Handoff
from pipeline.queue.heads import Heads
from pipeline.queue.job import Job
from pipeline.queue.liveness import Liveness, Presence, every, tick_s
from pipeline.queue.outcome import (
    Counters,
    Settlement,
    finish,
    from_error,
    from_stop,
    from_value,
    returned,
)
from pipeline.queue.pool import CpuPool
from pipeline.queue.shutdown import GracefulShutdown, Running
from pipeline.queue.stats import Stats
from pipeline.queue.sweeper import LeaseExpiredHook, Sweeper
from pipeline.queue.task import REGISTRY, lookup
from pipeline.queue.timeouts import Timeouts
from pipeline.redis.connection import sync_twin, text
from pipeline.redis.keys import EVENTS_MAXLEN
from pipeline.words import counted

log = logging.getLogger("pipeline.worker")

CLAIM_BATCH = 16  # most jobs one claim takes, never more than the free slots
GATED_LOOKAHEAD = 8  # jobs per queue shown to the gate before the worker idles
JOB_TASK_NAME = "pipeline-job"  # the asyncio task of every running job

JobHook = Callable[[JobContext, str, str | None], Awaitable[None]]


class Worker(GracefulShutdown):
    """Runs jobs from `queues`, in order: claims one job per free slot (at most
    `concurrency`) when the admission `gate` says its first call can go now, runs it with the
    options of this process's own task definition (the caller's explicit ones win) under a
    lease of 2 × its expected duration renewed every third of that from the liveness thread,
    and settles it with the claim's fencing token. `run()` publishes the imported tasks'
    options (registry.py) and returns on `stop()`, SIGTERM/SIGINT (running jobs get
    `shutdown_grace_s`, then go back to their queue) or, with `burst`, when the queues are
    empty. Errors raised by tasks never escape: they become the job's outcome.
    """

    def __init__(
        self,
        client: QueueClient,
        *,
        queues: Sequence[str] = ("default",),
        concurrency: int | None = None,
        gate: Gate | None = None,
        deps: dict[str, Any] | None = None,
        burst: bool = False,
        pool: CpuPool | None = None,
        worker_id: str | None = None,
        on_lease_expired: Sequence[LeaseExpiredHook] = (),
        on_job_end: Sequence[JobHook] = (),
        upkeep: Sequence[tuple[str, Callable[[], Awaitable[None]], float]] = (),
        job_fields: joblog.JobFields | None = None,
    ) -> None:
        s = client.settings
        self.client, self.redis, self.keys, self.scripts = (
            client,
            client.redis,
            client.keys,
            client.scripts,
        )
        self.queues = list(queues)
        self.concurrency = concurrency or s.worker_concurrency
        self.gate = gate or OpenGate()
        self.deps = deps if deps is not None else {}
        self.burst = burst
        self.pool = pool
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.on_job_end = list(on_job_end)
        self.upkeep = list(upkeep)  # (name, coroutine, interval s): e.g. the ledger flusher
        self.job_fields = job_fields  # more fields for a job's log lines (document, cost)
        self.sweeper = Sweeper(
            self.redis, self.keys, self.scripts, s.result_ttl_s, list(on_lease_expired)
        )
        self.running: dict[str, Running] = {}
        self.timeouts = Timeouts(self._timed_out)
        self._on_body_end = self._body_ended  # one bound method for every Running
        self._context = contextvars.copy_context()  # jobs' done callbacks run in it: no copy each
        # settlements of one loop turn share a round trip (a Cluster pipeline cannot load
        # scripts, so a Cluster client settles one by one)
        self.batcher = None if isinstance(self.redis, RedisCluster) else ScriptBatcher(self.redis)
        self.counters = Counters()
        self.stats = Stats(self.redis, self.keys)  # counters that outlive this process
        self._stop = asyncio.Event()
        self._upkeep_done = asyncio.Event()
        self._own_wake = self.keys.worker_wake(self.id)
        # wake list -> its queue (None: our own list, pushed to on stop); a queue's token is
        # only used for a direct claim when no gate has to see the job first
        self._wake_keys: dict[str, str | None] = {self._own_wake: None}
        gated = not isinstance(self.gate, OpenGate)
        self._wake_keys.update({self.keys.wake(q): (None if gated else q) for q in self.queues})
        # jobs handed over by enqueue.lua while idle (handoff.py): not through a gate, a
        # replica wait or a Cluster client, which claim as before
        self.handoff = (Handoff(self.redis, self.keys, self.scripts, self.id, self.queues)
                        if not gated and self.batcher is not None else None)  # fmt: skip
        self._waker: asyncio.Task[None] | None = None
        self._insisting: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self.heads = Heads(self.redis, [self.keys.queue(q) for q in self.queues],
                           peek=max(CLAIM_BATCH, GATED_LOOKAHEAD))
        self._signals = 0
        self._started_ms = int(time.time() * 1000)
        self._min_lease_ms = int(s.min_lease_s * 1000)
        self._defs = (len(REGISTRY), registry.claim_definitions(REGISTRY.values()))
        self._threads: ThreadPoolExecutor | None = None  # for plain `def` tasks, made on use
        self.presence = Presence(self.id, self.queues, self.concurrency,
                                 s.heartbeat_interval_s, self._started_ms)  # fmt: skip
        self.liveness = Liveness(sync_twin(self.redis), self.keys, self.presence, self._halt,
                                 tick_s=tick_s(s.min_lease_s))  # fmt: skip

    # -- lifecycle -------------------------------------------------------------------------
    async def run(self, install_signals: bool = True) -> None:
        if install_signals:
            self._install_signals()
        log.info("worker %s: queues %s, %s", self.id, ",".join(self.queues),
                 counted(self.concurrency, "slot"))
        self.liveness.start()  # renews what the first claim takes
        # The claim loop goes first: a claim resolves run options from this process's own
        # definitions (claim.lua), so it needs neither the announcement nor a sweep, and
        # those take their round trips on other connections meanwhile.
        claimer = asyncio.create_task(self._claim_loop())
        announcing = asyncio.create_task(self._announce())
        loops = [("sweep", self.sweeper.sweep, self.client.settings.sweep_interval_s), *self.upkeep]
        upkeep = [asyncio.create_task(every(name, fn, s, self._upkeep_done))
                  for name, fn, s in loops]  # fmt: skip
        upkeep.append(announcing)
        try:
            await self._stop.wait()
        finally:
            # The claim loop sees the stop flag within one blocking wait (1 s); it is not
            # cancelled mid-command, which redis-py does not always survive cleanly.
            _, late = await asyncio.wait([claimer], timeout=5)
            for t in late:
                t.cancel()
            if self.handoff is not None:  # a job handed over as we stopped is ours: run it
                with contextlib.suppress(RedisError):
                    for record in await self.handoff.leave():
                        self._start(Job.from_hash(record), None, handed=True)
            await self._drain()
            self._upkeep_done.set()
            _, late = await asyncio.wait(upkeep, timeout=10)
            for t in late:
                t.cancel()
            self.timeouts.close()
            await asyncio.to_thread(self.liveness.stop)
            with contextlib.suppress(RedisError):
                await heartbeat.leave(self.redis, self.keys, self.id)
                await self.redis.delete(self._own_wake)
            if self.pool is not None:
                await asyncio.to_thread(self.pool.shutdown)
            if self._threads is not None:  # a plain task past its timeout may still run
                self._threads.shutdown(wait=False, cancel_futures=True)
            log.info("worker %s stopped: %s", self.id, self.counters)

    async def _announce(self) -> None:
        try:
            await registry.announce(self.redis, self.keys, self.id, self.queues)
        except RedisError as exc:  # producers fall back to their own imports meanwhile
            log.warning("could not publish this worker's tasks: %s", exc)

    def stop(self) -> None:
        """Stop claiming now; running jobs get the grace period, then are released."""
        if not self._stop.is_set():
            self._stop.set()
            self.presence.stopping = True
            self._slot_freed.set()  # a full worker's claim loop notices the stop too
            # Wake our own idle wait now rather than after its timeout.
            self._waker = asyncio.get_running_loop().create_task(self._wake_self())

    async def _wake_self(self) -> None:
        with contextlib.suppress(RedisError):
            await self.redis.lpush(self._own_wake, "stop")
            await self.redis.expire(self._own_wake, 60)

    async def _claim_loop(self) -> None:
        while not self._stop.is_set():
            if self._busy() >= self.concurrency:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                claimed, wait_s = await self._claim_one()
                if claimed:
                    continue
                if self.burst and not self.running and await self._nothing_left():
                    log.info("burst worker %s: queues empty, exiting", self.id)
                    self.stop()
                    return
                await self._idle(wait_s)
            except RedisError as exc:  # Redis away or restarting: keep the loop alive
                log.warning("claim loop: %s; retrying", exc)
                await asyncio.sleep(0.5)

    def _busy(self) -> int:
        """Slots taken: running jobs whose body has not ended. A job being settled holds no
        slot: its task is done, and the next claim goes out beside its finish rather than
        one round trip after it."""
        return sum(1 for r in self.running.values() if not r.settling)

    async def _nothing_left(self) -> bool:
        """Whether a burst worker may exit: its queues empty once this worker has swept (a job
        whose lease expired goes back to its queue now, not after the upkeep loop's next turn)
        and no job of its queues is held by a worker that is gone (its lease will expire and
        the sweep requeue it: waited for, at most that lease). A job a live worker holds is
        not waited for: that worker finishes it or, if it dies, its lease brings it back."""
        if not await self._queues_empty():
            return False
        await self.sweeper.sweep()
        if not await self._queues_empty():
            return False
        live = {w["id"] for w in await heartbeat.list_workers(
            self.redis, self.keys, self.client.settings.heartbeat_interval_s)}  # fmt: skip
        return not await self.sweeper.held_by_gone(self.queues, live | {self.id})

    async def _queues_empty(self) -> bool:
        """Nothing ready in our queues and nothing waiting out a delay or retry back-off."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for q in self.queues:
                pipe.zcard(self.keys.queue(q))
            pipe.zcard(self.keys.delayed)
            return not any(await pipe.execute())

    async def _idle(self, gate_wait_s: float | None) -> None:
        """Wait for a wake token (a new job) or, when a gate said 'not yet', for that long.
        A token names the job that woke us: claim it at once if it is still its queue's head."""
        if gate_wait_s is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=min(max(gate_wait_s, 0.005), 1.0))
            return
        if self.handoff is not None and not await self.client.replicas.replicas(self.keys.idle):
            handed, popped = await self.handoff.wait(list(self._wake_keys), self._claim_defs(),
                                                     self._min_lease_ms)  # fmt: skip
            for record in handed:  # claimed for us by enqueue.lua: start it now
                self._start(Job.from_hash(record), None, handed=True)
            started = bool(handed)
        else:
            got = await self.redis.blpop(list(self._wake_keys), timeout=1)
            popped, started = ((text(got[0]), text(got[1])) if got else None), False
        if popped and self._busy() < self.concurrency:
            queue = self._wake_keys.get(popped[0])
            if queue and await self._claim(queue, [popped[1]], None, head_only=True):
                started = True
        if started:
            # let the job start before this loop's next look at the queues takes a
            # connection and a round trip: an idle worker's latency is this path
            await asyncio.sleep(0)

    async def _claim_one(self) -> tuple[bool, float | None]:
        """Claim from the first queue with work: its head jobs, one per free slot.

        With an admission gate each job is shown to the gate first, and the first of the
        next few that it admits is taken, so one paused model does not hold up a queue.
        Returns (claimed anything, wait): wait is None when the queues are empty, else how long
        the gate asked to wait before any job can start.
        """
        gated = not isinstance(self.gate, OpenGate)
        want = GATED_LOOKAHEAD if gated else min(self.concurrency - self._busy(), CLAIM_BATCH)
        heads = await self.heads.read(want)
        wait_s: float | None = None
        refused: dict[str, float] = {}  # gate answers by model in this pass
        for queue, ids in zip(self.queues, heads, strict=True):
            if not ids:
                continue
            if not gated:
                await self._claim(queue, ids, None)
                return True, None  # claimed, or lost a race: look again at once
            for job_id in ids:
                admission = await self._admit(queue, job_id, refused)
                if admission is None:
                    continue
                if not admission.ok:
                    wait_s = min(wait_s if wait_s is not None else 1e9, admission.retry_after_s)
                    continue
                if not await self._claim(queue, [job_id], admission):
                    await self.gate.release(admission)
                return True, None
        return False, wait_s

    async def _claim(
        self, queue: str, ids: list[str], admission: Admission | None, head_only: bool = False
    ) -> int:
        """claim.lua for these ids of `queue`; start what was won; return how many."""
        k = self.keys
        keys = [k.queue(queue), k.active, k.fence, k.events, *(k.job(i) for i in ids)]
        args = [self.id, self._min_lease_ms, EVENTS_MAXLEN, "head" if head_only else "any",
                self._claim_defs(), uuid.uuid4().hex[:8], *ids]  # fmt: skip
        replicas = self.client.replicas
        if self.batcher is not None and not await replicas.replicas(keys[0]):
            claimed = await self.heads.claim(self.scripts.claim, keys, args)  # reads heads too
        else:  # with replicas, a claim waits for one: one lost in a failover would run twice
            self.heads.forget()
            claimed = await replicas.script(self.scripts.claim, keys, args, last_reply=True)
        won = 0
        for raw in claimed:
            if raw:
                self._start(Job.from_hash(dict(zip(raw[::2], raw[1::2], strict=True))), admission)
                won += 1
        return won

    def _claim_defs(self) -> str:
        """claim.lua's task definitions (registry.claim_definitions) of this process."""
        if self._defs[0] != len(REGISTRY):  # a task module imported since: include it
            self._defs = (len(REGISTRY), registry.claim_definitions(REGISTRY.values()))
        return self._defs[1]

    async def _admit(self, queue: str, job_id: str, refused: dict[str, float]) -> Admission | None:
        """The gate's answer for one job; None (skip) when its model was refused in this pass."""
        task, hints = await self.redis.hmget(self.keys.job(job_id), ["task", "hints"])
        candidate = Candidate(job_id, text(task or ""), queue, json.loads(hints or "{}"))
        model = str(candidate.hints.get("model") or "")
        if model and model in refused:
            return None
        admission = await self.gate.admit(candidate)
        if not admission.ok and model:
            refused[model] = admission.retry_after_s
        return admission

    def _start(self, job: Job, admission: Admission | None, handed: bool = False) -> None:
        """Start the job's body as a task of its own (a plain function: its thread's future),
        under its timeout; `_body_ended` settles it when it is done. No coroutine of the
        worker's waits on the body meanwhile: one would hold a frame (~260 B) a running job."""
        self.counters.claimed += 1
        running = Running(job, self.client, self.id, self.pool, self.deps,
                          permit=admission.permit if admission else None,
                          on_end=self._on_body_end)  # fmt: skip
        joblog.started(job, joblog.describe(self.job_fields, job))
        body: asyncio.Future[Any]
        try:
            started = self._chord(running) if job.chord else self._body(running)
            # one name for every job's task: a name of its own (f"job-{id}") was ~100 B a
            # running job, an unnamed task's number ~50 B
            if asyncio.iscoroutine(started):
                body = asyncio.create_task(started, name=JOB_TASK_NAME)
            else:  # a plain function's future
                body = asyncio.ensure_future(started)
        except Exception as exc:  # no such task here, or its call raised (its arguments)
            body = asyncio.get_running_loop().create_future()
            body.set_exception(exc)
        running.task = body
        # a handed job's first lease is short (handoff.py): renewed to its full length at once
        self.liveness.leases.hold(running, renew_now=handed)
        self.running[job.id] = running
        if not body.done():
            # the timeout is a halt like any other (and insisted on like one), from the
            # worker's one timeout timer: it ignores this job once `settling` is set
            self.timeouts.add(running, job.timeout_s)
        body.add_done_callback(running, context=self._context)  # calls _body_ended

    def _timed_out(self, running: Running) -> None:
        if self.running.get(running.job.id) is running:  # not a later claim of the same id
            self._halt(running.job.id, "timeout")

    # -- running ---------------------------------------------------------------------------
    def _body(self, ctx: JobContext) -> Awaitable[Any]:
        """The job's body, started: a coroutine, or a plain function's future. Raises
        UnknownTask, or what calling the task raised."""
        job = ctx.job
        task = lookup(job.task)
        args = job.args  # unpacked into the call: the task cannot change the job's list
        if job.chord:
            args = [ctx.group_results, *args]
        if not task.is_async:  # plain functions run in threads of their own
            self._threads = self._threads or ThreadPoolExecutor(self.concurrency, "task")
        return task.start(ctx, args, job.call_kwargs, self._threads)

    async def _chord(self, ctx: JobContext) -> Any:
        """A chord callback's body: its group's results first (within its timeout)."""
        assert ctx.job.chord is not None
        ctx.group_results = await self.client.group_results(ctx.job.chord)
        body = self._body(ctx)
        try:
            return await body
        except asyncio.CancelledError:
            if not returned(body):  # as in _body_ended: a function that returned is settled
                raise
            return body.result()

    def _body_ended(self, running: Running) -> None:
        """The body is done: its settlement, from here on in a task nothing cancels (_halt
        and _insist skip a settling job)."""
        job = running.job
        try:
            settlement = self._settlement(running)
        except Exception as exc:
            # This runs as a done callback, where an error is only logged by the loop: the
            # job would stay active, its lease renewed, until the worker stops. Settled as an
            # error instead (retried while it has attempts).
            log.exception("job %s: how its attempt ended could not be read", job.id)
            settlement = from_error(job, RuntimeError(
                f"the worker could not read how this attempt ended ({type(exc).__name__}); "
                "its log has the traceback"))  # fmt: skip
        running.settling = True
        self.timeouts.ended(running)
        self._slot_freed.set()
        self.liveness.leases.drop(job.id, job.token or "")  # renewal stops; finish is fenced
        running.task = asyncio.create_task(self._end(running, settlement), name=JOB_TASK_NAME)

    @staticmethod
    def _settlement(running: Running) -> Settlement:
        """What the ended body comes to: its value, its error, or the stop that cancelled it."""
        body, job = running.task, running.job
        # A plain function's thread can return before a halt (its timeout, a lost lease, a
        # cancel, shutdown) in the same loop turn: the cancel then finds its future done and
        # does nothing. The work is done (and paid for): what it returned or raised is
        # settled, never a stop.
        if body.cancelled():
            reason = running.stop_reason
            return from_error(job, TimeoutError()) if reason == "timeout" else from_stop(reason)
        if (exc := body.exception()) is not None:
            return from_error(job, exc)
        try:
            return from_value(job, body.result())
        except Exception as error:  # not JSON
            return from_error(job, error)

    async def _end(self, running: Running, settlement: Settlement) -> None:
        job = running.job
        try:
            await self._settle(running, settlement)
        finally:
            # the job may be back in its queue and claimed again here by now: a newer claim's
            # lease and entry are not this attempt's to drop
            self.liveness.leases.drop(job.id, job.token or "")
            if self.running.get(job.id) is running:
                self.running.pop(job.id, None)
            self._slot_freed.set()

    async def _settle(self, ctx: JobContext, s: Settlement) -> None:
        """Settle first (its own retries ride out a Redis outage); everything after it is
        best effort and must not undo a settlement that happened."""
        job, outcome = ctx.job, s.outcome
        if outcome != "lost":
            ttl_s = self.client.settings.result_ttl_s
            applied = await finish(self.scripts, self.keys, job, s, ttl_s, self.stats,
                                   self.client.replicas, self.batcher)  # fmt: skip
            if applied is not None:  # a retry of a job cancelled meanwhile ends `cancelled`
                outcome = applied
                self.counters.count(outcome)
            else:  # refused as stale (finish logged and counted it)
                self.counters.fenced += 1
                outcome = "fenced"
        ran_s = time.time() - job.started_ms / 1000 if job.started_ms else 0.0
        joblog.ended(job, outcome, ran_s, joblog.describe(self.job_fields, job), error=s.error,
                     traceback=s.traceback, delay_s=s.delay_s, reason=s.reason)  # fmt: skip
        if ctx.permit is not None:  # admitted but never used: give the tokens back
            try:
                await self.gate.release(Admission(ok=True, permit=ctx.take_permit()))
            except Exception:
                log.exception("job %s: could not give back its unused permit", job.id)
        for hook in self.on_job_end:
            try:
                await hook(ctx, outcome, s.error or None)
            except Exception:
                log.exception("job-end hook failed for job %s", job.id)
