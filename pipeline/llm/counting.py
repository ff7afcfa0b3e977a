"""Exact input tokens before a call: countTokens, cached per prompt and model in Redis.

A budget is only a bound if the reservation is: an estimate from the page count lets a PDF
billed at more tokens than estimated pass the budget (field case 12; api-examples#94 shows
a PDF counted and billed far above its page charge). countTokens is free (GEMINI.md §3.3)
and answers with the figure the prompt is billed at, so every paid call is counted first.
The figure is cached per provider and prompt (`TokenCounter.key`): a retry, a larger output
budget or a second worker asks Redis, not the provider. The provider is in the key because
the emulator's count is its own estimate: a rehearsal's figure standing for Gemini's would
make a reservation, and so a budget, rest on a count Gemini never gave.
"""

from __future__ import annotations

import re

from redis.asyncio import Redis

from pipeline.llm.provider import LLMRequest, Provider
from pipeline.redis.keys import Keys

_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![a-z])")
PDF_TOKENS_PER_PAGE = 560  # Gemini 3 MEDIUM media resolution (GEMINI.md §3.5)
COUNT_TTL_S = 7 * 86400


def rough_input_tokens(request: LLMRequest) -> int:
    """A no-network estimate for the limiter's debit: ~4 chars a token, 560 a PDF page.
    Never used as a budget bound."""
    total = len(request.system or "") // 4
    for part in request.parts:
        if part.text:
            total += len(part.text) // 4 + 1
        if part.has_bytes:
            pages = part.pages  # known for a stored document: its file is not read here
            if pages is None:
                pdf = part.mime_type == "application/pdf"
                pages = len(_PDF_PAGE.findall(part.read())) if pdf else 0
            total += max(1, pages) * PDF_TOKENS_PER_PAGE
    return max(1, total)


class TokenCounter:
    """`count(request)`: the provider's countTokens figure for the request's prompt (system
    prompt included), from Redis when it was counted before. A failed count raises the
    provider's ProviderCallError: without the figure there is no bound, so no call."""

    def __init__(
        self, provider: Provider, redis: Redis, keys: Keys, ttl_s: int = COUNT_TTL_S
    ) -> None:
        self.provider = provider
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s

    def key(self, request: LLMRequest) -> str:
        """The Redis key of `request`'s figure from this provider (`Provider.name`)."""
        return self.keys.token_count(f"{self.provider.name}:{request.prompt_hash()}")

    async def cached(self, request: LLMRequest) -> int | None:
        """The figure if it was counted before, without asking the provider."""
        value = await self.redis.get(self.key(request))
        return None if value is None else int(value)

    async def count(self, request: LLMRequest) -> int:
        cached = await self.cached(request)
        if cached is not None:
            return cached
        tokens = int(await self.provider.count_tokens(request))
        await self.redis.set(self.key(request), str(tokens), ex=self.ttl_s)
        return tokens
