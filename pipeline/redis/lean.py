"""The lean command path: a pool that lends an idle connection without waiting, and a client
that sends a command on it without redis-py's per-command wrapping, for the common case.

redis-py's asyncio client (8.1) spends ~250,000 CPU instructions on a PING beyond what the
bytes cost (callgrind here: ~310,000 through `Redis` on a `BlockingConnectionPool`, ~57,000
over raw asyncio streams): the pool takes its condition lock and starts an `asyncio.timeout`
for every command even when a connection lies idle, and `release` takes the lock again and
records observability counters; `execute_command` wraps each command in a retry closure and
records its duration. Every queue command pays that: enqueue, claim, finish, renew, and an
idle worker's latency is mostly the enqueue's client side.

`LeanBlockingPool` lends the most recently used idle connection directly when it is connected
and nobody waits for one, and puts it back directly when nobody waits; any other case (no idle
connection, a waiter, maintenance mode, a connection to be reconnected) takes redis-py's own
path, so a burst of more commands than connections still waits its turn, bounded by
`timeout`. The check redis-py makes on every lent connection (no unread data, not closed) is
made here too, without redis-py's `connect()` around it (a no-op for a connected one, behind a
retry wrapper); a connection that fails it goes through redis-py's `ensure_connection`.

`LeanRedis.execute_command` sends the command and reads its reply; on an error that the
client's retry policy covers (a dropped connection, a restart), it drops the connection and
hands the command to redis-py's own `execute_command`, which retries with back-off: the same
attempts and errors as before, one attempt more. `pipelined(redis, commands)` does the same
for a few commands sent together (an idle worker's registration and its blocking pop):
redis-py's pipeline (8.1) costs an idle worker ~45 us between the pop's reply arriving and
the job starting (a retry closure, observability, fieldset bookkeeping, and a release through
`asyncio.shield`, which is a task of its own and two more event-loop turns). Single-connection
clients, pipelines, Pub/Sub and transactions are redis-py's unchanged.

What is skipped: redis-py's observability events and metrics for pools and commands, which
this project does not enable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError, ResponseError, TimeoutError


class LeanBlockingPool(BlockingConnectionPool):
    """`BlockingConnectionPool` with a direct path for the common case (module docstring).
    Same constructor and errors: ConnectionError("No connection available.") after
    `timeout` seconds with every connection in use."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiting = 0  # callers inside redis-py's get_connection, maybe on the condition

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        idle = self._available_connections
        if idle and not self._waiting and not self._in_maintenance and idle[-1].is_connected:
            connection = idle.pop()
            self._in_use_connections.add(connection)
            try:
                # connected already, so redis-py's connect() (a retry wrapper around a no-op)
                # is skipped; a connection with unread data or a closed stream is handed to
                # its ensure_connection, which reconnects it
                if await _unclean(connection):
                    await self.ensure_connection(connection)
            except BaseException:
                await super().release(connection)
                raise
            return connection
        self._waiting += 1
        try:
            lent: AbstractConnection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
            return lent
        finally:
            self._waiting -= 1

    async def release(self, connection: AbstractConnection) -> None:
        if self._waiting or self._in_maintenance or connection.should_reconnect():  # type: ignore[no-untyped-call]
            await super().release(connection)  # wakes a waiter, or reconnects
            return
        self._in_use_connections.remove(connection)
        self._available_connections.append(connection)


async def _unclean(connection: AbstractConnection) -> bool:
    """Whether a connected connection is not ready for a command: data left unread, or
    closed by the peer (redis-py's `can_read`, which ensure_connection asks too)."""
    try:
        return bool(await connection.can_read())
    except (ConnectionError, TimeoutError, OSError):
        return True


class LeanRedis(Redis):
    """redis-py's asyncio `Redis` with a direct `execute_command` (module docstring); build it
    on any pool (`Redis(connection_pool=...)`). Raises what redis-py raises."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if self.single_connection_client or self.connection is not None:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        pool = self.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_command(*args)
            return await self.parse_response(conn, args[0], **options)
        except conn.retry._supported_errors as error:  # what redis-py's retry would catch
            await conn.disconnect(error=error)
        finally:
            await pool.release(conn)
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]  # its retries


async def pipelined(redis: Redis, commands: Sequence[Sequence[Any]]) -> list[Any]:
    """Send `commands` in one write on one connection and read their replies, in order, as
    redis-py's non-transactional `pipe.execute(raise_on_error=False)` does: a command that
    Redis refused (ResponseError, NoScriptError) has its error as its reply; a connection
    error raises (after redis-py's retries). On a LeanRedis the commands go on a lent
    connection directly; on an error its retry policy covers, that connection is dropped
    and the commands are sent again through redis-py's pipeline, with its retries. A
    cancelled read (a blocking pop) drops its connection, as redis-py's own reads do."""
    if isinstance(redis, LeanRedis) and not redis.single_connection_client:
        pool = redis.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(conn.pack_commands(commands))
            replies: list[Any] = []
            for command in commands:
                try:
                    replies.append(await redis.parse_response(conn, command[0]))
                except ResponseError as error:  # read whole: the next reply is still in sync
                    replies.append(error)
            return replies
        except conn.retry._supported_errors as error:
            await conn.disconnect(error=error)
        finally:
            await pool.release(conn)
    async with redis.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute(raise_on_error=False))
