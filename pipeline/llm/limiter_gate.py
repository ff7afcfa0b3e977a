"""The limiter as the worker's admission gate (pipeline.queue.gate's protocol).

The queue asks a gate before it claims a job; this one answers from the model's shared
limits (limiter.py: the request window and the token bucket), so a worker never holds a
job it could not call for.
"""

from __future__ import annotations

import asyncio

from pipeline.errors import OverLimit, UnknownModel
from pipeline.llm.limiter import Limiter, Permit
from pipeline.queue.gate import Admission, Candidate

__all__ = ["LimiterGate"]


class LimiterGate:
    """The limiter as the worker's admission gate: no claim while the bucket says wait.

    A job without a "model" hint makes no LLM call the limiter knows of and is admitted.
    A permit handed back through `release` belongs to a claim that lost a race, so no
    request was sent: it is refunded in full (slot, request, tokens, today's count), or the
    lost race would silently eat quota that Google never saw used.
    """

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter
        # model -> when this worker was first held back for it (monotonic s): the wait it
        # reports is per worker, so four waiting workers add up four times the wall time.
        self._held_since: dict[str, float] = {}

    async def admit(self, candidate: Candidate) -> Admission:
        hinted = candidate.hints.get("model")
        if not hinted:
            return Admission(ok=True)
        tokens = int(candidate.hints.get("tokens") or 0)
        try:
            model = self.limiter.canonical(str(hinted))
            got = await self.limiter.try_acquire(model, tokens)
        except (OverLimit, UnknownModel):
            # Never admissible: let the job run so its call raises the same error, which
            # Services.call turns into Permanent (the job fails at once with the message).
            return Admission(ok=True)
        now = asyncio.get_running_loop().time()
        if isinstance(got, Permit):
            since = self._held_since.pop(model, None)
            if since is not None:
                await self.limiter.stats.limiter_waited(model, now - since)
            return Admission(ok=True, permit=got)
        self._held_since.setdefault(model, now)
        await self.limiter.stats.limiter_refused(model, got.kind)
        return Admission(ok=False, retry_after_s=got.retry_after_s, reason=got.reason)

    async def release(self, admission: Admission) -> None:
        if isinstance(admission.permit, Permit):
            await self.limiter.release(admission.permit, sent=False)
