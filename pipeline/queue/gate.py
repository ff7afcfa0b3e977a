"""Admission control: the worker asks a gate before it claims a job.

The point is that waiting happens in Redis, where every worker can see the job, and not
inside a worker that has already taken it. The rate limiter and the budget implement this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Candidate:
    """What a gate sees of the job at the head of a queue before anyone claims it."""

    job_id: str
    task: str
    queue: str
    hints: dict[str, Any] = field(default_factory=dict)  # e.g. {"model": ..., "tokens": ...}


@dataclass(frozen=True)
class Admission:
    """Yes (with a permit to give back if the claim loses a race), or not before `retry_after_s`."""

    ok: bool
    retry_after_s: float = 0.0
    permit: Any = None
    reason: str = ""


class Gate(Protocol):
    async def admit(self, candidate: Candidate) -> Admission: ...

    async def release(self, admission: Admission) -> None:
        """Give back a permit that was granted but not used (the claim lost a race)."""
        ...


class OpenGate:
    async def admit(self, candidate: Candidate) -> Admission:
        return Admission(ok=True)

    async def release(self, admission: Admission) -> None:
        return None
