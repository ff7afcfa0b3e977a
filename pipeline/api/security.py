"""What every answer of the API carries, and how the dashboard's browsers are signed in.

- Headers on every response: a Content-Security-Policy (only this origin's scripts and
  styles; the Swagger page at /docs also loads its CDN), X-Frame-Options DENY,
  X-Content-Type-Options nosniff, Referrer-Policy no-referrer, and HSTS when the request
  came over https (OWASP's HTTP Headers Cheat Sheet).
- A NUL byte in the path or query is refused with 400 before any handler runs: no store
  can keep it (PostgreSQL refuses it in text), and a 503 "retry" would loop a client forever.
- Sessions: /login stores a random session id in Redis and hands the browser that id signed
  with HMAC-SHA256 under a secret derived from the API keys, never the key itself; a session
  dies at sign-out, after `SESSION_TTL_S`, or when its key leaves PIPELINE_API_KEYS.
- /login allows `LOGIN_ATTEMPTS` failures per client address per `LOGIN_WINDOW_S`, then 429.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes

import redis.asyncio as aioredis

from pipeline.redis.keys import Keys

SESSION_TTL_S = 7 * 86400
LOGIN_ATTEMPTS = 10
LOGIN_WINDOW_S = 300

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


class SecurityHeaders:
    """ASGI middleware: the headers above on every HTTP response, and 400 for a NUL byte."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [
            (b"content-security-policy",
             (_DOCS_CSP if scope["path"] == "/docs" else _CSP).encode()),
            (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
        ]  # fmt: skip
        if scope.get("scheme") == "https":
            headers.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        if "\x00" in scope["path"] or b"\x00" in unquote_to_bytes(scope.get("query_string", b"")):
            await _reject_nul(send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


async def _reject_nul(send: Send) -> None:
    body = json.dumps({"detail": "the path or query contains a NUL byte (%00): remove it; "
                                 "no id, date or name here can hold one"}).encode()  # fmt: skip
    await send({"type": "http.response.start", "status": 400,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def _fingerprint(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


class Sessions:
    """Signed-in dashboard browsers, kept in Redis; the cookie is `<id>.<signature>`."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, api_keys: list[str]) -> None:
        self.redis, self.keys = redis, keys
        self.api_keys = api_keys
        material = "\n".join(sorted(api_keys)).encode()
        self._secret = hashlib.sha256(b"pipeline dashboard sessions\n" + material).digest()

    def _sign(self, session_id: str) -> str:
        return hmac.new(self._secret, session_id.encode(), hashlib.sha256).hexdigest()

    async def start(self, api_key: str) -> str:
        """A new session for a browser that proved it holds `api_key`; returns the cookie."""
        session_id = secrets.token_urlsafe(32)
        await self.redis.set(self.keys.dashboard_session(session_id), _fingerprint(api_key),
                             ex=SESSION_TTL_S)  # fmt: skip
        return f"{session_id}.{self._sign(session_id)}"

    async def valid(self, cookie: str) -> bool:
        session_id, _, signature = cookie.partition(".")
        if not session_id or not hmac.compare_digest(signature, self._sign(session_id)):
            return False
        held = await self.redis.get(self.keys.dashboard_session(session_id))
        if held is None:
            return False
        return any(hmac.compare_digest(str(held), _fingerprint(k)) for k in self.api_keys)

    async def end(self, cookie: str) -> None:
        session_id, _, signature = cookie.partition(".")
        if session_id and hmac.compare_digest(signature, self._sign(session_id)):
            await self.redis.delete(self.keys.dashboard_session(session_id))


class LoginThrottle:
    """Counts failed sign-ins per client address in a fixed window (Redis INCR + EXPIRE)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis, self.keys = redis, keys

    async def blocked_for_s(self, client: str) -> int:
        """0 when `client` may try; else the seconds until its window ends."""
        key = self.keys.login_failures(client)
        failures = await self.redis.get(key)
        if failures is None or int(failures) < LOGIN_ATTEMPTS:
            return 0
        return max(1, int(await self.redis.ttl(key)))

    async def failed(self, client: str) -> None:
        key = self.keys.login_failures(client)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, LOGIN_WINDOW_S, nx=True)
            await pipe.execute()
