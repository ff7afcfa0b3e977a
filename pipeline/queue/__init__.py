"""The Redis job queue for slow, paid jobs: leases, fencing, prefetch of one, idempotency."""

from pipeline.queue.client import GroupHandle, JobHandle, QueueClient
from pipeline.queue.context import JobContext
from pipeline.queue.gate import Admission, Candidate, Gate, OpenGate
from pipeline.queue.job import Job, JobOptions, State
from pipeline.queue.task import Call, Task, task
from pipeline.queue.worker import Worker

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
