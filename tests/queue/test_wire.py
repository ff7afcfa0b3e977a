"""Commands packed by hiredis (pipeline/redis/wire.py) are the bytes redis-py would send,
and a real Redis answers them as it answers redis-py's own packing."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from pipeline.redis.connection import connect_redis
from pipeline.redis.keys import Keys
from pipeline.redis.wire import fast_wire

ARGS = [
    ("GET", "k"),
    ("CONFIG GET", "maxmemory"),
    (b"CLIENT SETNAME", b"x"),
    ("EVALSHA", "a" * 40, 2, "{p}:k1", "{p}:k2", 0.1, 1e-7, 1e20, -3, "é", b"\x00\xff"),
    ("SET", "big", "v" * 10_000),
    ("SET", "view", memoryview(b"abc")),
    ("SET", "array", bytearray(b"abc")),
]


@pytest.mark.parametrize("args", ARGS, ids=range(len(ARGS)))
def test_hiredis_packing_sends_what_redis_py_sends(args: tuple[object, ...]) -> None:
    ours = fast_wire(Connection)().pack_command(*args)
    theirs = Connection().pack_command(*args)
    assert b"".join(ours) == b"".join(bytes(c) for c in theirs)


@pytest.mark.parametrize("bad", [None, True, object()])
def test_values_redis_py_refuses_are_refused(bad: object) -> None:
    with pytest.raises(DataError):
        fast_wire(Connection)().pack_command("SET", "k", bad)


async def test_a_real_redis_reads_back_what_was_sent(redis_url: str, keys: Keys) -> None:
    client = connect_redis(redis_url)
    try:
        assert client.connection_pool.connection_class.__module__ == "pipeline.redis.wire"
        key = keys.job("packing-test")
        await client.hset(key, mapping={"text": "é ✓", "float": 0.1, "int": -3})
        assert await client.hgetall(key) == {"text": "é ✓", "float": "0.1", "int": "-3"}
        assert await client.eval("return ARGV[1] .. ARGV[2]", 0, 1e-7, "x") == "1e-07x"
        await client.delete(key)
    finally:
        await client.aclose()


async def test_large_commands_and_dropped_connections_still_work(redis_url: str,
                                                                 keys: Keys) -> None:
    """A send over the transport's high-water mark takes redis-py's path (with its timeout);
    a connection Redis dropped is reconnected by the client's retries, as before."""
    client = connect_redis(redis_url)
    other = connect_redis(redis_url)
    key = keys.job("wire-test")
    try:
        big = "x" * 1_000_000
        await client.set(key, big)
        assert await client.get(key) == big
        name = "wire-test-" + keys.prefix
        await client.client_setname(name)
        for entry in await other.client_list():
            if entry.get("name") == name:
                await other.client_kill_filter(_id=entry["id"])
        assert await client.set(key, "after") and await client.get(key) == "after"
    finally:
        await client.delete(key)
        await client.aclose()
        await other.aclose()
