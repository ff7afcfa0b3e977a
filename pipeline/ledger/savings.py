"""What Gemini Batch Mode saved: the interactive price of the tokens batch calls were billed
for, minus what they cost (`pipeline costs --by mode`).

Each batch row (llm_calls.mode = "batch") is priced again at the standard rate of the day it
was made, from the same config/pricing.toml row that priced it at the batch discount.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.ledger.models import LLMCall, counted_at
from pipeline.llm.pricing import PriceTable
from pipeline.llm.provider import Usage


def batch_savings(session: Session, prices: PriceTable, since: datetime | None = None,
                  until: datetime | None = None) -> tuple[Decimal, Decimal]:  # fmt: skip
    """(interactive price, batch cost) in USD of the batch calls counted in [since, until)
    (models.counted_at, as the cost report's range).
    A row whose model has no price counts its own cost on both sides (no saving claimed)."""
    stmt = select(LLMCall).where(LLMCall.mode == "batch")
    if since is not None:
        stmt = stmt.where(counted_at() >= since)
    if until is not None:
        stmt = stmt.where(counted_at() < until)
    full = paid = Decimal(0)
    for call in session.scalars(stmt):
        cost = Decimal(call.cost_usd or 0)
        paid += cost
        usage = Usage(
            input_tokens=call.input_tokens,
            output_tokens=call.output_tokens,
            thinking_tokens=call.thinking_tokens,
            cached_tokens=call.cached_tokens,
        )
        try:
            full += prices.cost(call.model_version or call.model, usage, call.started_at)
        except Exception:  # UnknownModel, or no price that day
            full += cost
    return full, paid
