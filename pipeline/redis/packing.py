"""Commands packed into the Redis protocol in C (hiredis) on the asyncio client.

redis-py's synchronous connections pack commands with `hiredis.pack_command` when hiredis
is installed; its asyncio connections (8.1) always pack them in Python, one `bytes.join` per
argument. A finish.lua call carries ~30 arguments, so packing was the worker's largest
single CPU cost per job (bench/queue_profile.py). `packing(cls)` is `cls` with hiredis
packing, else `cls` unchanged (hiredis is a dependency, but an install without its wheel
still works). The bytes sent are the same: str as UTF-8, int and float as their repr
(checked in tests/queue/test_packing.py); a None or bool is refused with DataError, as
redis-py's encoder refuses it.
"""

from __future__ import annotations

import sys
from functools import cache
from typing import Any, TypeVar

from redis.exceptions import DataError

try:
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - hiredis is a dependency
    _pack = None

C = TypeVar("C", bound=type)


class _HiredisPacking:
    """Mixin: `pack_command` through hiredis; everything else from the connection class."""

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str):  # 'CONFIG GET' -> two arguments, as redis-py does
            if " " in first:
                args = (*first.split(), *args[1:])
        elif b" " in first:
            args = (*first.split(), *args[1:])
        try:
            return [_pack(args)]  # type: ignore[misc]
        except TypeError:
            args = tuple(bytes(a) if isinstance(a, bytearray | memoryview) else a for a in args)
            try:
                return [_pack(args)]  # type: ignore[misc]
            except TypeError as exc:
                raise DataError(str(exc)).with_traceback(sys.exc_info()[2]) from None


@cache
def packing(cls: C) -> C:
    """`cls` (an asyncio redis-py connection class) packing commands with hiredis."""
    if _pack is None:
        return cls
    return type(cls.__name__, (_HiredisPacking, cls), {"__module__": __name__})  # type: ignore[return-value]
