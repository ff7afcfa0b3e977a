"""The Redis job queue for slow, paid jobs: leases, fencing, prefetch of one, idempotency.

The client and the worker (which load redis-py and the settings) are imported on first use,
so a process that only defines tasks or runs a CPU helper (pool.py's child processes) does
not pay for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pipeline.queue.context import JobContext
from pipeline.queue.gate import Admission, Candidate, Gate, OpenGate
from pipeline.queue.job import Job, JobOptions, State
from pipeline.queue.task import Call, Task, task

if TYPE_CHECKING:
    from pipeline.queue.client import GroupHandle, JobHandle, QueueClient
    from pipeline.queue.worker import Worker

_LAZY = {"GroupHandle": "client", "JobHandle": "client", "QueueClient": "client",
         "Worker": "worker"}  # fmt: skip

__all__ = [
    "Admission",
    "Call",
    "Candidate",
    "Gate",
    "GroupHandle",
    "Job",
    "JobContext",
    "JobHandle",
    "JobOptions",
    "OpenGate",
    "QueueClient",
    "State",
    "Task",
    "Worker",
    "task",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'pipeline.queue' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"pipeline.queue.{_LAZY[name]}"), name)
    globals()[name] = value
    return value
