"""The moment a request goes on the wire, reported from inside the provider's HTTP client.

The limiter's window counts a request from when it left (limiter.py, window_sent.lua), not
from its grant: between the two lie a job's start, a file upload's wait, the body's
encoding, and under CPU load those vary by seconds, while the provider counts arrivals.
The caller sets `on_wire` (a coroutine function of no arguments) around one provider call;
GeminiProvider's httpx client calls it once, after the body of a generateContent request
has been written to the socket (httpcore's `trace` extension, event
"http11.send_request_body.complete" or its HTTP/2 twin). A request that never got that far
(a refused connection) is not reported; the limiter then stamps it at release.

A context variable, because the SDK owns the call path between the caller and its httpx
client: an asyncio task copies the caller's context, so concurrent calls never see each
other's callback.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Any

__all__ = ["on_wire", "reporting", "request_hook"]

log = logging.getLogger(__name__)

OnWire = Callable[[], Awaitable[Any]]
on_wire: ContextVar[OnWire | None] = ContextVar("pipeline_on_wire", default=None)

# Paths of the calls the provider counts against its request quota (GEMINI.md §3.3).
_COUNTED = (":generateContent", ":streamGenerateContent")


@contextlib.contextmanager
def reporting(callback: OnWire) -> Iterator[None]:
    """Within this block, a counted request that goes out calls `callback` once."""
    token = on_wire.set(callback)
    try:
        yield
    finally:
        on_wire.reset(token)


async def request_hook(request: Any) -> None:
    """An httpx (or httpx2) "request" event hook: arm the trace of a counted request."""
    callback = on_wire.get()
    if callback is None or not request.url.path.endswith(_COUNTED):
        return
    fired = False

    async def trace(event: str, info: dict[str, Any]) -> None:
        nonlocal fired
        if fired or not event.endswith("send_request_body.complete"):
            return
        fired = True
        try:
            await callback()
        except Exception:  # the stamp is an optimisation; release stamps it anyway
            log.warning("could not stamp a request on the wire", exc_info=True)

    request.extensions = {**request.extensions, "trace": trace}
