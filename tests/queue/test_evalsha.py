"""Scripts sent as bare EVALSHA (pipeline/redis/replication.py `evalsha`, the enqueue's path
with no replica to wait for): a script the server does not hold (a restarted Redis, an
emptied script cache) is loaded once and answers; a script's own error is raised."""

from __future__ import annotations

import uuid

import pytest
from redis.exceptions import ResponseError

from pipeline.redis.connection import connect_redis
from pipeline.redis.replication import evalsha


async def test_a_script_the_server_lacks_is_loaded_and_answers(redis_url: str) -> None:
    r = connect_redis(redis_url)
    key = f"test-evalsha-{uuid.uuid4().hex[:12]}"
    # a text no server has seen, so its first EVALSHA is answered NOSCRIPT
    script = r.register_script(
        f"-- {uuid.uuid4().hex}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
    try:
        assert not (await r.script_exists(script.sha))[0]
        assert await evalsha(r, script, [key], [5]) == 5
        assert (await r.script_exists(script.sha))[0]
        assert await evalsha(r, script, [key], [2]) == 7
    finally:
        await r.delete(key)
        await r.aclose()


async def test_a_scripts_error_is_raised(redis_url: str) -> None:
    r = connect_redis(redis_url)
    script = r.register_script(f"-- {uuid.uuid4().hex}\nreturn redis.error_reply('refused')")
    try:
        with pytest.raises(ResponseError, match="refused"):
            await evalsha(r, script, ["k"], [])
    finally:
        await r.aclose()
