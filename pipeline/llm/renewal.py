"""Keeping a lease alive while a call runs: the one renewal loop behind the limiter's permit
lease and the budget's hold.

Both are leases on shared state in Redis that lapse by themselves if their holder dies, and
both must be renewed for as long as a (possibly minutes-long) call is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

log = logging.getLogger("pipeline.llm")


@contextlib.asynccontextmanager
async def renewing(
    every_s: float, renew: Callable[[], Awaitable[object]], what: str
) -> AsyncIterator[None]:
    """Call `renew()` every `every_s` seconds while the block runs, then stop it.

    A failed renewal is logged and retried at the next tick (the lease it renews outlives
    several ticks); nothing is raised into the block.
    """

    async def renew_forever() -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await renew()
            except Exception:
                log.warning("could not renew %s; retrying", what, exc_info=True)

    task = asyncio.create_task(renew_forever())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
