"""How the asyncio client puts commands on the wire: packed in C (hiredis), and sent without
a task per command.

redis-py's synchronous connections pack commands with `hiredis.pack_command` when hiredis
is installed; its asyncio connections (8.1) always pack them in Python, one `bytes.join` per
argument. A finish.lua call carries ~30 arguments, so packing was the worker's largest
single CPU cost per job (bench/queue_profile.py). `fast_wire(cls)` is `cls` with hiredis
packing and the direct send below, else `cls` unchanged (hiredis is a dependency, but an
install without its wheel still works). The bytes sent are the same: str as UTF-8, int
and float as their repr (checked in tests/queue/test_wire.py); a None or bool is refused
with DataError, as redis-py's encoder refuses it.

Sending: redis-py 8.1 gives every connection a 5 s socket timeout and, with one set, wraps
each send in `asyncio.wait_for`, which on Python 3.11 is a new task per command (two more
event-loop turns, and ~5 % of a busy worker's CPU). That timeout can only matter when the
send has to wait: the transport's buffer over its high-water mark, so `drain()` blocks until
Redis reads. A send with nothing pending before it and no larger than the mark cannot block,
and goes straight out; any other (data still buffered, a closed or new connection, a health
check due) takes redis-py's own path, timeout included.
"""

from __future__ import annotations

import asyncio
import sys
from functools import cache
from typing import Any, TypeVar

from redis.exceptions import ConnectionError, DataError

try:
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - hiredis is a dependency
    _pack = None  # type: ignore[assignment]

C = TypeVar("C", bound=type)


class _Wire:
    """Mixin: `pack_command` through hiredis, and a send that cannot block without a task;
    everything else from the connection class."""

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str):  # 'CONFIG GET' -> two arguments, as redis-py does
            if " " in first:
                args = (*first.split(), *args[1:])
        elif b" " in first:
            args = (*first.split(), *args[1:])
        try:
            return [_pack(args)]
        except TypeError:
            args = tuple(bytes(a) if isinstance(a, bytearray | memoryview) else a for a in args)
            try:
                return [_pack(args)]
            except TypeError as exc:
                raise DataError(str(exc)).with_traceback(sys.exc_info()[2]) from None

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        writer = getattr(self, "_writer", None)
        transport = writer.transport if writer is not None else None
        if (
            writer is None
            or transport is None
            or transport.is_closing()
            or not isinstance(command, list)
            or getattr(self, "_reader", None) is None
            or (check_health and self._health_check_due())
            # nothing pending (so the protocol is not paused: it resumes before the buffer
            # empties) and the command under the high-water mark (so it cannot pause it)
            or transport.get_write_buffer_size() != 0
            or sum(map(len, command)) > transport.get_write_buffer_limits()[1]
        ):
            await super().send_packed_command(command, check_health)  # type: ignore[misc]
            return
        writer.writelines(command)  # under the high-water mark: drain() does not wait
        try:
            await writer.drain()
        except OSError as exc:  # the peer went away meanwhile: what redis-py raises then
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise ConnectionError(f"Error while writing to socket. {exc}.") from exc
        except BaseException:
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise

    def _health_check_due(self) -> bool:
        interval = getattr(self, "health_check_interval", 0)
        return bool(interval) and asyncio.get_running_loop().time() > self.next_health_check  # type: ignore[attr-defined]


@cache
def fast_wire(cls: C) -> C:
    """`cls` (an asyncio redis-py connection class) packing with hiredis and sending directly."""
    if _pack is None:
        return cls
    return type(cls.__name__, (_Wire, cls), {"__module__": __name__})  # type: ignore[return-value]
