"""The limiter of a provider whose calls reach no one: the offline analyzer.

The shared limiter (limiter.py) counts a *remote* provider's quota: requests a minute, input
tokens a minute, requests a day, per model, in Redis. The offline analyzer answers on this
machine and spends none of it, yet its requests name a Gemini model (the one a document was
submitted for), so through the real limiter every offline call was counted against that
model's quota: `make demo` left "7 (10000)" in today's Gemini column, and while the bucket
refilled the rate columns read as quota gone. A provider says whether it is limited with
`metered` (pipeline/llm/provider.py); for one that is not, the caller is given `Unmetered`,
which grants at once and writes nothing, and the worker claims without the limiter's gate.

The emulator is metered: a rehearsal takes the real limiter's quota on purpose (documented
in README.md), and nothing here changes that.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from pipeline.llm.limiter import Limiter, Permit, Wait
from pipeline.llm.pricing import canonical_model


def metered(provider: object) -> bool:
    """Whether `provider`'s calls count against a remote provider's rate limits (a provider
    that does not say is assumed to, like `billed`)."""
    return bool(getattr(provider, "metered", True))


class Unmetered(Limiter):
    """A Limiter that grants every permit at once and keeps no state: nothing in Redis, no
    request counted today, no slot held. Model names are still canonical (UnknownModel for
    a model the price table does not know), so a call keys and prices as it would metered.
    """

    def __init__(self, canonical: Callable[[str], str] = canonical_model) -> None:
        # No Redis and no scripts: the parent's state is never touched.
        self.canonical = canonical

    def _permit(self, model: str, tokens: int) -> Permit:
        return Permit(self.canonical(model), "unmetered", tokens, 0.0, 0.0)

    async def try_acquire(self, model: str, tokens: int) -> Permit | Wait:
        return self._permit(model, tokens)

    async def acquire(self, model: str, tokens: int, deadline_s: float | None = None) -> Permit:
        return self._permit(model, tokens)

    async def release(self, permit: Permit, actual_input_tokens: int | None = None, *,
                      sent: bool = True) -> bool:  # fmt: skip
        return True

    async def on_wire(self, permit: Permit) -> float:
        return 0.0

    async def renew(self, permit: Permit) -> bool:
        return True

    @contextlib.asynccontextmanager
    async def hold(self, permit: Permit) -> AsyncIterator[Permit]:
        yield permit

    async def on_rate_limited(self, model: str, retry_delay_s: float | None = None,
                              per_day: bool = False) -> dict[str, Any]:  # fmt: skip
        return {"paused_until_ms": 0.0, "factor": 1.0, "daily_exhausted_until_ms": 0.0}

    async def on_success(self, model: str) -> float:
        return 1.0
