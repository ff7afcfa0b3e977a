"""Call-level idempotency: an answer that was paid for once is never paid for again.

A job retried after a crash, a lease lost mid-call, or the same document submitted twice
all end up asking the same question. The call key hashes everything that changes the
answer (model, prompt version, parts, generation settings); an answer that was *used* is
kept in Redis as JSON under that key, and a later call with the same key is answered from
here without touching the provider. Only used answers are stored: a failure, and a paid
answer that could not be used (cut at MAX_TOKENS, blocked, invalid), must stay retryable,
or every retry would replay it (field case 08c).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any

from redis.asyncio import Redis

from pipeline.llm.provider import LLMRequest, LLMResponse, Usage
from pipeline.redis.keys import Keys

# Bump when the stored shape or what may be stored changes, so old entries are simply not
# found. v2: v1 stores could hold truncated or blocked answers kept as successes.
STORE_FORMAT = "v2"


def call_key(request: LLMRequest) -> str:
    """sha256 over (model, prompt version, content hash with settings): same key, same answer."""
    material = [STORE_FORMAT, request.model, request.prompt_version, request.content_hash()]
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
    def __init__(self, redis: Redis, keys: Keys, ttl_s: int = 30 * 86400) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s

    async def get(self, key: str) -> LLMResponse | None:
        raw = await self.redis.get(self.keys.call(key))
        return None if raw is None else decode_response(raw)

    async def put(self, key: str, response: LLMResponse) -> None:
        await self.redis.set(self.keys.call(key), encode_response(response), ex=self.ttl_s)

    async def delete(self, key: str) -> None:
        """Forget an answer that can no longer be used, so the next call asks again."""
        await self.redis.delete(self.keys.call(key))

