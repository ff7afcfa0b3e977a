"""Wait for a condition under a deadline: tests assert what must become true, never how fast."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T | None]], timeout_s: float = 20.0, what: str = "condition"
) -> T:
    """Poll `check` every 20 ms until it returns something truthy and return that value.

    Raises AssertionError naming `what` once `timeout_s` seconds have passed without it.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


def until(check: Callable[[], T | None], timeout_s: float, what: str = "condition") -> T:
    """`eventually` for code without an event loop: call `check` every 50 ms until it returns
    something truthy and return that value.

    Raises AssertionError naming `what` (and the last value seen) once `timeout_s` seconds
    have passed without it.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what} "
                                 f"(last: {value!r})")  # fmt: skip
        time.sleep(0.05)
