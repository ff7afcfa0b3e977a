"""Call-level idempotency: an answer that was paid for once is never paid for again.

A job retried after a crash, a lease lost mid-call, or the same document submitted twice
all end up asking the same question. The call key hashes everything that changes the
answer (who answers, model, prompt version, parts, generation settings); an answer that was
*used* is kept in Redis as JSON under that key, and a later call with the same key is
answered from here without touching the provider. Only used answers are stored: a
failure, and a paid answer that could not be used (cut at MAX_TOKENS, blocked, invalid),
must stay retryable, or every retry would replay it (field case 08c).

Redis is not where a paid answer may end: it can be away when the answer arrives, or lose
its data. With a `durable` side (the SQL ledger's `call_answers`, pipeline/ledger/answers.py)
an answer is written there first, Redis is a cache in front of it, and a Redis error is
logged rather than raised once the durable copy is safe; a lookup that Redis cannot answer
asks the durable side before the call is paid for again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import asdict
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from pipeline.llm.provider import LLMRequest, LLMResponse, Usage
from pipeline.redis.keys import Keys

log = logging.getLogger(__name__)

# Bump when the stored shape or what may be stored changes, so old entries are simply not
# found. v2: v1 stores could hold truncated or blocked answers kept as successes. v3: the key
# names the provider; a v2 entry may be an emulator rehearsal's answer, which must never be
# replayed as Gemini's (so v2 entries are not read, at the price of asking once more a call
# that was answered before the upgrade and not yet used).
STORE_FORMAT = "v3"
# A Redis read or write of the store waits this long before the durable side is used.
REDIS_TIMEOUT_S = 5.0


class DurableAnswers(Protocol):
    """Where answers are kept when Redis may not be (pipeline/ledger/answers.py)."""

    async def save_answer(self, call_key: str, answer: str, model_version: str | None) -> None:
        """Keep `answer` (this module's JSON) for `call_key`; raise if it could not be kept."""

    async def find_answer(self, call_key: str, max_age_s: int) -> str | None:
        """The answer kept for `call_key` within `max_age_s` seconds, or None."""

    async def forget_answer(self, call_key: str) -> None:
        """Drop the answer kept for `call_key` (it can no longer be used)."""


def call_key(request: LLMRequest, provider: str) -> str:
    """sha256 (64 hex) over (provider, model, prompt version, content hash with settings):
    same key, same answer. `provider` is the answering provider's name (`Provider.name`:
    "gemini", "emulator", "offline"), so a rehearsal's answers never stand for Gemini's."""
    material = [STORE_FORMAT, provider, request.model, request.prompt_version,
                request.content_hash()]  # fmt: skip
    return hashlib.sha256(json.dumps(material).encode()).hexdigest()


def encode_response(response: LLMResponse) -> str:
    """JSON of what a caller needs back; `raw` is left out (large, and provider-specific)
    but for its "mode" ("batch": answered by a batch job, priced at the batch rate)."""
    body: dict[str, Any] = {
        "text": response.text,
        "data": response.data,
        "usage": asdict(response.usage),
        "model_version": response.model_version,
        "latency_s": response.latency_s,
    }
    if response.raw.get("mode"):
        body["mode"] = response.raw["mode"]
    return json.dumps(body)


def decode_response(raw: str | bytes) -> LLMResponse:
    body: dict[str, Any] = json.loads(raw)
    return LLMResponse(
        text=body["text"],
        usage=Usage(**body["usage"]),
        model_version=body["model_version"],
        latency_s=float(body["latency_s"]),
        data=body.get("data"),
        raw={"mode": body["mode"]} if body.get("mode") else {},
    )


class CallStore:
    """Answers by call key for `ttl_s` seconds: Redis, and the `durable` side when given.

    `get` returns the stored LLMResponse or None; `put` raises only when the answer could be
    kept nowhere (RedisError without a durable side, or both failing)."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        ttl_s: int = 30 * 86400,
        durable: DurableAnswers | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s
        self.durable = durable

    async def get(self, key: str) -> LLMResponse | None:
        raw: str | bytes | None = None
        try:
            raw = await asyncio.wait_for(self.redis.get(self.keys.call(key)), REDIS_TIMEOUT_S)
        except (RedisError, OSError, TimeoutError) as exc:
            if self.durable is None:
                raise
            log.warning("call store: Redis unavailable (%s); asking the ledger", exc)
        if raw is None and self.durable is not None:
            raw = await self.durable.find_answer(key, self.ttl_s)
        return None if raw is None else decode_response(raw)

    async def put(self, key: str, response: LLMResponse) -> None:
        raw = encode_response(response)
        kept = False
        if self.durable is not None:
            try:
                await self.durable.save_answer(key, raw, response.model_version)
                kept = True
            except Exception:
                log.exception("call store: could not keep the answer in the ledger")
        try:
            await asyncio.wait_for(
                self.redis.set(self.keys.call(key), raw, ex=self.ttl_s), REDIS_TIMEOUT_S
            )
        except (RedisError, OSError, TimeoutError) as exc:
            if not kept:
                raise
            log.warning("call store: Redis unavailable (%s); the answer is kept in the ledger",
                        exc)  # fmt: skip

    async def delete(self, key: str) -> None:
        """Forget an answer that can no longer be used, so the next call asks again."""
        if self.durable is not None:
            await self.durable.forget_answer(key)
        await self.redis.delete(self.keys.call(key))

