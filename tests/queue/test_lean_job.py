"""A running job's record is kept small (job.py, job_values.py: parts made only when read,
values shared between jobs, the rare fields in one part) and still reads and writes as a
plain record of its own: what a task writes into its job stays its job's, and a job's
context variables stay its own."""

from __future__ import annotations

import asyncio
import copy
import sys
import threading
from typing import cast

from pipeline.queue import Job, QueueClient, State
from pipeline.queue.shutdown import Running
from tests.queue.conftest import worker
from tests.support import queue_tasks as qt

# A finished group member's hash, every field set, as the scripts write it.
FULL = {
    "id": "j1", "task": "t.x", "queue": "q", "state": "failed", "args": "[1, \"a\"]",
    "kwargs": "{\"k\": 2}", "priority": "7", "attempt": "2", "max_attempts": "3",
    "expected_s": "1.5", "timeout_s": "60", "retry_delays_s": "[1.0, 2.0]", "batch": "b1",
    "hints": "{\"model\": \"m\"}", "token": "4-abcd", "worker": "w1", "lease_ms": "3000",
    "lease_deadline_ms": "1700000003000", "created_ms": "1700000000000",
    "started_ms": "1700000000000", "finished_ms": "1700000001000", "result": "null",
    "error": "boom", "traceback": "tb", "reason": "error", "cancel": "1", "group": "g1",
    "group_index": "0", "callback_id": "cb", "callback_queue": "q2", "chord": "g0",
    "progress": "{\"p\": 1}", "lease_expiries": "1", "idempotency_key": "ab" * 16,
    "options": "{\"max_attempts\": 3}",
}  # fmt: skip


def test_a_job_read_back_has_every_field_as_stored() -> None:
    job = Job.from_hash(FULL)
    assert job.to_dict() == {
        "id": "j1", "task": "t.x", "queue": "q", "state": "failed", "args": [1, "a"],
        "kwargs": {"k": 2}, "priority": 7, "attempt": 2, "max_attempts": 3, "expected_s": 1.5,
        "timeout_s": 60.0, "retry_delays_s": [1.0, 2.0], "batch": "b1", "hints": {"model": "m"},
        "worker": "w1", "lease_ms": 3000, "lease_deadline_ms": 1700000003000,
        "created_ms": 1700000000000, "started_ms": 1700000000000,
        "finished_ms": 1700000001000, "result": None, "error": "boom", "traceback": "tb",
        "reason": "error", "cancel_requested": True, "group": "g1", "group_index": 0,
        "callback_id": "cb", "callback_queue": "q2", "chord": "g0", "progress": {"p": 1},
        "lease_expiries": 1, "idempotency_key": "ab" * 16, "options": {"max_attempts": 3},
    }  # fmt: skip
    assert job.token == "4-abcd" and job.state is State.FAILED
    assert job == Job.from_hash(FULL) and job != Job.from_hash({**FULL, "error": "other"})
    assert "error='boom'" in repr(job)
    bare = Job.from_hash({"id": "j2", "started_ms": "0"})
    assert bare.to_dict() == {
        "id": "j2", "task": "", "queue": "default", "state": "queued", "args": [],
        "kwargs": {}, "priority": 5, "attempt": 0, "max_attempts": 0, "expected_s": 0.0,
        "timeout_s": 0.0, "retry_delays_s": [], "batch": None, "hints": {}, "worker": None,
        "lease_ms": 0, "lease_deadline_ms": None, "created_ms": 0, "started_ms": None,
        "finished_ms": None, "result": None, "error": None, "traceback": None,
        "reason": None, "cancel_requested": False, "group": None, "group_index": None,
        "callback_id": None, "callback_queue": None, "chord": None, "progress": None,
        "lease_expiries": 0, "idempotency_key": None, "options": {},
    }  # fmt: skip


def test_what_a_job_leaves_unmade_or_shares_is_its_own_once_written() -> None:
    """Two jobs of one task read from equal hashes (empty kwargs, hints and options, the same
    retry delays text): a write into one's parts never shows in the other's, and stays."""
    same = {"id": "j", "task": "t.x", "retry_delays_s": "[10.0, 60.0]", "kwargs": "{}"}
    one, other = Job.from_hash(same), Job.from_hash(same)
    assert one.call_kwargs == {}
    for part in ("kwargs", "hints", "options"):
        getattr(one, part)["mine"] = 1
        assert getattr(one, part) == {"mine": 1} and getattr(other, part) == {}
    assert one.call_kwargs == {"mine": 1}
    one.retry_delays_s.append(300.0)
    assert one.retry_delays_s == [10.0, 60.0, 300.0] and other.retry_delays_s == [10.0, 60.0]
    one.error, one.lease_expiries = "boom", 2
    assert (one.error, one.lease_expiries) == ("boom", 2)
    assert (other.error, other.lease_expiries, other.finished_ms) == (None, 0, None)
    one.error = None
    assert one.error is None and one.lease_expiries == 2
    one.hints = {"replaced": True}
    assert one.hints == {"replaced": True}


RARE = ("error", "traceback", "reason", "group", "callback_id", "callback_queue", "chord")


def test_threads_making_a_part_at_once_share_one() -> None:
    """A plain-function task writes into its job from a thread while the loop may read or
    write it too: every write lands in the one part the job keeps."""
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(100):
            job = Job.from_hash({"id": "j"})
            start = threading.Barrier(len(RARE))

            def write(name: str, job: Job = job, start: threading.Barrier = start) -> None:
                start.wait()
                job.hints[name] = job.kwargs[name] = name
                setattr(job, name, name)

            threads = [threading.Thread(target=write, args=(name,)) for name in RARE]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert len(job.hints) == len(job.kwargs) == len(RARE)
            assert [getattr(job, name) for name in RARE] == list(RARE)
    finally:
        sys.setswitchinterval(switch)


async def test_a_task_writes_into_its_own_job_only(client: QueueClient, redis_url: str) -> None:
    """Jobs of one task running at once, and one after them, each write into the parts of its
    job a worker leaves unmade or shares (t.owns): each reads back its own writes only."""
    async with worker(redis_url, client, concurrency=3):
        together = [await client.enqueue(qt.owns, 0.3) for _ in range(3)]
        results = [await handle.result(timeout_s=10) for handle in together]
        after = await client.enqueue(qt.owns, 0.0)
        results.append(await after.result(timeout_s=10))
    for handle, seen in zip([*together, after], results, strict=True):
        mine = {"mine": handle.id}
        assert seen == {"kwargs": mine, "hints": mine, "options": mine,
                        "retry_delays_s": [10.0, 60.0, 300.0, 3], "progress": mine,
                        "group": handle.id, "error": None}  # fmt: skip


async def test_a_jobs_context_variables_stay_its_own(client: QueueClient, redis_url: str) -> None:
    """A context variable a job sets is neither seen by jobs running beside it nor by the
    jobs its worker runs after it."""
    async with worker(redis_url, client, concurrency=3):
        together = [await client.enqueue(qt.context_var, 0.3) for _ in range(3)]
        results = await asyncio.gather(*(h.result(timeout_s=10) for h in together))
        later = [await client.enqueue(qt.context_var, 0.0) for _ in range(3)]
        results += [await handle.result(timeout_s=10) for handle in later]
    assert results == [["unset", handle.id] for handle in [*together, *later]]


def test_a_jobs_context_shows_before_its_body_is_stored() -> None:
    """A plain-function task's thread can run, and show its `ctx` (a log line's %r), before
    the worker has stored the body it started in the context (Running.task): the context
    shows as it did when it was an object of its own (4 of 300 such jobs raised
    AttributeError in a probe on a real worker)."""
    job = Job.from_hash({"id": "j1", "task": "t.x"})
    ctx = Running(job, cast(QueueClient, None), "w1")
    shown = repr(ctx)
    assert shown.startswith("Running(job=Job(id='j1'") and "worker_id='w1'" in shown


def test_a_copy_of_a_job_is_a_record_of_its_own() -> None:
    """copy.copy(job), as of the dataclass it was: a field set on the copy (a rare one too,
    kept in a part of the job's) leaves the original as it was, and the other way round."""
    job = Job.from_hash(FULL)
    twin = copy.copy(job)
    assert twin == job and twin is not job
    twin.error, twin.lease_expiries, twin.state = "other", 5, State.ACTIVE
    job.result = {"mine": True}
    assert (job.error, job.lease_expiries, job.state) == ("boom", 1, State.FAILED)
    assert (twin.result, twin.finished_ms) == (None, 1700000001000)
    bare = Job.from_hash({"id": "j2"})
    twin = copy.copy(bare)
    twin.error = "set"
    assert bare.error is None and twin.error == "set"
