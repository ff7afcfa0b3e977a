"""What a document waiting in a Batch Mode group waits for, as the group stands now.

A member job looks at its group's Gemini batch job now and then (tasks/batch_mode.py) and
between looks keeps the words of its last one: "being created by another worker" stays on
it for a whole poll interval after that worker created the job. A view (tasks/status.py's
derivation) says instead what the group's Redis record and its members' looks say now.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.errors import Reason

if TYPE_CHECKING:
    from pipeline.queue.client import QueueClient
    from tasks.status import JobView, Run


@dataclass(frozen=True)
class GroupSeen:
    """A Batch Mode group as it stands now (tasks/batches.surroundings): its remote Gemini
    batch job, once created; its end state once its answers are booked; and the newest state
    of the job any member saw at its last look (`state`, and `since`, the job's create time,
    ISO), None before one did. A member waiting in the group says this, not what it saw at
    its own last look ("being created by another worker" while the job exists already)."""

    remote: str
    booked: str | None = None
    state: str | None = None
    since: str | None = None

    def words(self) -> str:
        if self.booked:
            return (f"Gemini batch {self.remote} ended {self.booked}; its answer is taken at "
                    "the next look")  # fmt: skip
        if self.state:
            since = f" since {self.since}" if self.since else ""
            return f"in Gemini batch {self.remote}, state {self.state}{since}"
        return f"in Gemini batch {self.remote} (created; its state is read at the next look)"


def newest_state(states: list[str]) -> str | None:
    """The latest of the states members saw one Gemini batch job in: a job moves from
    PENDING to RUNNING to its end, never back, so the furthest along is the newest."""

    def rank(state: str) -> int:
        return 0 if "PENDING" in state else 1 if "RUNNING" in state else 2

    return max(states, key=rank) if states else None


def in_group(job: JobView, groups: dict[str, GroupSeen]) -> str | None:
    """What `job`, waiting in a Batch Mode group, waits for now (`GroupSeen.words`); None
    when it waits for something else or its group has no remote job yet (then its own last
    words stand: being created, its budget being reserved)."""
    if job.reason != Reason.IN_BATCH or not job.mode or not job.mode.get("group"):
        return None
    seen = groups.get(str(job.mode["group"]))
    return seen.words() if seen is not None else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def groups_seen(client: QueueClient, runs: list[Run]) -> dict[str, GroupSeen]:
    """The Batch Mode groups of `runs`' roots that wait, as they stand now: each one's
    remote job (from its Redis record; groups without one are left out) and the newest
    state its members saw it in at their looks (their progress: stage in_batch)."""
    from tasks.status import not_ended  # tasks.status reads this module's words

    roots = [r.root for r in runs if r.root is not None and r.root.mode
             and r.root.mode.get("group") and not_ended(r.root)]  # fmt: skip
    names = sorted({str(j.mode["group"]) for j in roots if j.mode})
    if not names:
        return {}
    async with client.redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hmget(client.keys.batch_group(name), "remote", "booked")
        replies = await pipe.execute()
    out: dict[str, GroupSeen] = {}
    for name, (remote, booked) in zip(names, replies, strict=True):
        if not remote:
            continue
        remote = _text(remote)
        looks = [j.progress for j in roots if j.mode and j.mode.get("group") == name
                 and isinstance(j.progress, dict) and j.progress.get("stage") == "in_batch"
                 and j.progress.get("batch_job") == remote]  # fmt: skip
        state = newest_state([str(p["state"]) for p in looks if p.get("state")])
        since = next((str(p["since"]) for p in looks if p.get("since")), None)
        out[name] = GroupSeen(remote, _text(booked) if booked else None, state, since)
    return out
