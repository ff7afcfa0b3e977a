"""What a running task sees: its job, a permit from admission, shared resources, progress."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.queue.job import Job
from pipeline.queue.task import dumps
from pipeline.redis.keys import EVENTS_MAXLEN

if TYPE_CHECKING:
    from pipeline.queue.client import QueueClient
    from pipeline.queue.pool import CpuPool


@dataclass(slots=True)  # no instance dict: one per running job
class JobContext:
    job: Job
    client: QueueClient
    worker_id: str
    pool: CpuPool | None = None
    deps: dict[str, Any] = field(default_factory=dict)  # provider, recorder… set by the worker
    permit: Any = None  # granted by the admission gate for this job's first call
    group_results: list[Any] | None = None  # for a chord callback: its members' outcomes

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def attempt(self) -> int:
        return self.job.attempt

    @property
    def batch(self) -> str | None:
        return self.job.batch

    def take_permit(self) -> Any:
        """Hand the admission permit to the first call that uses it, exactly once."""
        permit, self.permit = self.permit, None
        return permit

    async def progress(self, data: Any) -> None:
        """Publish progress (JSON) on the job record and the event stream."""
        text = dumps(data, "progress")
        k = self.client.keys
        async with self.client.redis.pipeline(transaction=True) as pipe:
            pipe.hset(k.job(self.job.id), "progress", text)
            pipe.xadd(
                k.events,
                {
                    "job": self.job.id,
                    "state": "progress",
                    "task": self.job.task,
                    "queue": self.job.queue,
                    "batch": self.job.batch or "",
                    "attempt": str(self.job.attempt),
                    "progress": text,
                },
                maxlen=EVENTS_MAXLEN,
                approximate=True,
            )
            await pipe.execute()

    async def run_cpu(self, func_path: str, *args: Any) -> Any:
        """Run a CPU-heavy function (`module:function`) in the recycled process pool."""
        if self.pool is None:
            raise RuntimeError("this worker has no process pool")
        return await self.pool.run(func_path, *args)
