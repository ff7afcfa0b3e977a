"""A batch's current budget, kept in Redis beside the reservations it bounds.

A job carries the budget its batch had when it was submitted; a person may raise (or lower)
it later with `pipeline budget BATCH --set` or `PATCH /batches/{id}`. Every call reads the
current figure from here (falling back to the job's own), so a raised budget applies to work
already queued and to retries at once. The ledger's `batches.budget_usd` holds the same
figure for reading back after Redis's copy expires.
"""

from __future__ import annotations

from decimal import Decimal

import redis.asyncio as aioredis

from pipeline.redis.connection import text
from pipeline.redis.keys import Keys

# As long as the batch's budget scope itself lives (ledger/budget.py keeps it 90 days).
BATCH_LIMIT_TTL_S = 90 * 86400


async def current_limit(redis: aioredis.Redis, keys: Keys, batch_id: str | None) -> Decimal | None:
    """The batch's budget in USD as last set, or None when none was set (or it expired)."""
    if not batch_id:
        return None
    raw = await redis.get(keys.batch_budget(batch_id))
    return None if raw is None else Decimal(text(raw))


async def set_limit(redis: aioredis.Redis, keys: Keys, batch_id: str, usd: Decimal) -> None:
    """Make `usd` the batch's budget for every call from now on (checked by the caller with
    pipeline.ledger.budget.check_budget_usd)."""
    await redis.set(keys.batch_budget(batch_id), str(usd), ex=BATCH_LIMIT_TTL_S)
