"""The lean connection pool (pipeline/redis/lean.py) on a real Redis: it lends idle
connections directly, yet a burst larger than the pool still waits its turn and finishes, no
more connections are opened than allowed, a command cancelled mid-flight leaves no reply to
the next, and a pool that stays full answers with redis-py's error; commands sent together
(`pipelined`) answer in order, an error as its command's reply, and survive a dropped
connection and a cancelled blocking pop."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.exceptions import ConnectionError, NoScriptError, ResponseError

from pipeline.redis.connection import connect_redis
from pipeline.redis.lean import LeanBlockingPool, LeanRedis, pipelined


def _key() -> str:
    return f"test-lean-pool-{uuid.uuid4().hex[:12]}"


async def test_client_uses_the_lean_path(redis_url: str) -> None:
    r = connect_redis(redis_url)
    try:
        assert isinstance(r, LeanRedis)
        assert isinstance(r.connection_pool, LeanBlockingPool)
        assert await r.ping()
    finally:
        await r.aclose()


async def test_a_burst_larger_than_the_pool_waits_and_finishes(redis_url: str) -> None:
    """200 commands on 3 connections, each command holding its connection across the event
    loop (BLPOP with a short wait), mixed with plain ones: every command answers within the
    deadline and the pool never opens a fourth connection."""
    r = connect_redis(redis_url, max_connections=3, wait_for_connection_s=30)
    key = _key()
    pool = r.connection_pool
    most = 0

    async def one(i: int) -> object:
        nonlocal most
        most = max(most, len(pool._in_use_connections))
        if i % 4 == 0:
            return await r.blpop([key], timeout=0.01)
        return await r.incr(key + ":n")

    try:
        replies = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(200))), 60)
        assert len(replies) == 200
        assert int(await r.get(key + ":n")) == 150
        assert most <= 3
        assert len(pool._in_use_connections) + len(pool._available_connections) <= 3
        assert not pool._in_use_connections
        assert pool._waiting == 0
    finally:
        await r.delete(key + ":n")
        await r.aclose()


async def test_a_cancelled_command_does_not_leave_its_reply_to_the_next(redis_url: str) -> None:
    """A command cancelled while Redis holds it (BLPOP; a job cancelled mid-call) gets its
    reply later, on the wire; the next command lent that connection reads its own reply."""
    r = connect_redis(redis_url, max_connections=1)
    other = connect_redis(redis_url)
    key = _key()
    try:
        await r.set(key + ":v", "mine")
        waiting = asyncio.create_task(r.blpop([key], timeout=5))
        await asyncio.sleep(0.2)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await other.rpush(key, "stale")  # BLPOP's reply would now reach the old socket
        await asyncio.sleep(0.1)
        for _ in range(3):
            assert await r.get(key + ":v") == "mine"
        assert await other.lrange(key, 0, -1) == ["stale"]  # nobody popped it
    finally:
        await other.delete(key, key + ":v")
        await other.aclose()
        await r.aclose()


async def test_a_full_pool_raises_after_its_timeout(redis_url: str) -> None:
    r = connect_redis(redis_url, max_connections=1, wait_for_connection_s=0.3)
    key = _key()
    try:
        holder = asyncio.create_task(r.blpop([key], timeout=3))
        await asyncio.sleep(0.2)
        with pytest.raises(ConnectionError, match="No connection available"):
            await r.ping()
        assert await holder is None
        assert await r.ping()
    finally:
        await r.aclose()


async def test_a_dropped_connection_is_retried_on_redis_pys_path(redis_url: str) -> None:
    """Redis closes the client's connection (as a restart would): the next command, sent on
    the lean path, meets the dead socket, and redis-py's retry path answers it."""
    r = connect_redis(redis_url, max_connections=1)
    admin = connect_redis(redis_url)
    key = _key()
    try:
        await r.set(key, "kept")
        own_id = await r.client_id()
        assert await admin.client_kill_filter(_id=own_id) == 1
        await asyncio.sleep(0.1)
        assert await r.get(key) == "kept"
        assert await r.client_id() != own_id  # a new connection answered
    finally:
        await admin.delete(key)
        await admin.aclose()
        await r.aclose()


async def test_pipelined_commands_answer_in_order_with_errors_as_replies(redis_url: str) -> None:
    """An unknown script (NOSCRIPT) and a wrong-type command answer with their errors, and the
    commands after each still get their own replies, on one connection, as redis-py's
    non-transactional pipeline answers them."""
    r = connect_redis(redis_url, max_connections=1)
    key = _key()
    try:
        await r.rpush(key + ":l", "a", "b")
        replies = await pipelined(r, (
            ("EVALSHA", "0" * 40, 0), ("SET", key, "v"), ("INCR", key),
            ("BLPOP", key + ":l", 1), ("GET", key)))  # fmt: skip
        assert isinstance(replies[0], NoScriptError)
        assert replies[1] is True
        assert isinstance(replies[2], ResponseError)
        assert replies[3] == (key + ":l", "a")
        assert replies[4] == "v"
        assert await r.lrange(key + ":l", 0, -1) == ["b"]  # the connection is in sync after
    finally:
        await r.delete(key, key + ":l")
        await r.aclose()


async def test_pipelined_commands_survive_a_dropped_connection(redis_url: str) -> None:
    """Redis closed the lent connection (a restart): the commands go again on redis-py's
    pipeline, with its retries, and answer."""
    r = connect_redis(redis_url, max_connections=1)
    admin = connect_redis(redis_url)
    key = _key()
    try:
        own_id = await r.client_id()
        assert await admin.client_kill_filter(_id=own_id) == 1
        await asyncio.sleep(0.1)
        assert await pipelined(r, (("SET", key, "v"), ("GET", key))) == [True, "v"]
        assert await r.client_id() != own_id
    finally:
        await admin.delete(key)
        await admin.aclose()
        await r.aclose()


async def test_a_cancelled_pipelined_pop_leaves_no_reply_to_the_next(redis_url: str) -> None:
    """An idle worker stopped while its registration and blocking pop wait: the pop's late
    reply never reaches the next command lent that connection."""
    r = connect_redis(redis_url, max_connections=1)
    other = connect_redis(redis_url)
    key = _key()
    try:
        await r.set(key + ":v", "mine")
        waiting = asyncio.create_task(pipelined(r, (("INCR", key + ":n"), ("BLPOP", key, 5))))
        await asyncio.sleep(0.2)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await other.rpush(key, "stale")
        await asyncio.sleep(0.1)
        for _ in range(3):
            assert await r.get(key + ":v") == "mine"
        assert await other.lrange(key, 0, -1) == ["stale"]
        assert await r.get(key + ":n") == "1"
    finally:
        await other.delete(key, key + ":v", key + ":n")
        await other.aclose()
        await r.aclose()
