"""What each running job's calls cost so far, for the worker's log line at the job's end.

A Recorder that passes every write on to the real one (the ledger) and keeps, per job, the
booked cost of each settled attempt (by attempt id, so a second `settled` of one attempt
replaces rather than adds). The ledger stays the record; this is a log's convenience.
"""

from __future__ import annotations

from decimal import Decimal

from pipeline.llm.attempts import CallAttempt, Recorder


class TallyingRecorder:
    """`Recorder` wrapper: forwards `started`/`settled` to `inner`, tallies cost per job id."""

    def __init__(self, inner: Recorder) -> None:
        self.inner = inner
        self._by_job: dict[str, dict[str, Decimal]] = {}

    async def started(self, call: CallAttempt) -> None:
        await self.inner.started(call)

    async def settled(self, call: CallAttempt) -> None:
        await self.inner.settled(call)
        if call.job_id:
            self._by_job.setdefault(call.job_id, {})[call.attempt_id] = call.cost_usd

    def job_cost(self, job_id: str) -> Decimal | None:
        """USD booked for the job's settled calls in this process; None if it made none."""
        costs = self._by_job.get(job_id)
        return None if costs is None else sum(costs.values(), Decimal(0))

    def forget(self, job_id: str) -> None:
        self._by_job.pop(job_id, None)
