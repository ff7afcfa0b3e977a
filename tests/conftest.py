"""Shared fixtures: a real Redis and a real database for every test, and a queue client.

Redis: PIPELINE_TEST_REDIS_URL, else a server on 127.0.0.1:6379 if one answers, else the
project's own embedded redis-server. Each test gets its own key prefix, so tests never
see each other's keys and nothing is ever flushed.

Each folder's conftest.py holds what only its tests use; helpers several folders share are in
tests/support/.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from pipeline.queue import QueueClient
from pipeline.redis.keys import Keys
from tests.support.workers import fast_settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files in an order that mixes the folders, each file's tests kept together and in order.

    pytest-xdist's work stealing hands each process a contiguous share of the collection at
    the start: in folder order the long multi-process scenarios (tests/scenarios, last
    alphabetically) all fell to the last process and ran at the end, together, while the
    other processes had run out of short tests. Ordered by a hash of the file's path they are
    spread over the run (the same order every time)."""
    import hashlib

    def file_key(item: pytest.Item) -> str:
        return hashlib.sha1(str(item.path).encode()).hexdigest()

    position = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (file_key(item), position[id(item)]))


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("PIPELINE_TEST_REDIS_URL")
    if url:
        yield url
        return
    if _port_open("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/0"
        return
    from pipeline.redis.server import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("redis-home"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of the test's own; its keys are deleted from the test Redis afterwards
    (CI's Redis outlives the run: keys left behind made every SCAN of later runs slower)."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    yield prefix
    with contextlib.suppress(redis.RedisError):  # a test may have stopped its Redis
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        try:
            keys = list(client.scan_iter(match="{" + prefix + "}*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
        finally:
            client.close()


@pytest.fixture
def keys(key_prefix: str) -> Keys:
    return Keys(key_prefix)


@pytest.fixture
async def aredis(redis_url: str, keys: Keys) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await _drop_prefix(client, keys.prefix)
    await client.aclose()


@pytest.fixture
def sredis(redis_url: str, keys: Keys) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    for key in client.scan_iter(match="{" + keys.prefix + "}*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture
async def client(aredis: aioredis.Redis, keys: Keys) -> QueueClient:
    """A QueueClient on the test's prefix with the fast test timings (short leases, sweeps)."""
    return QueueClient(aredis, keys, fast_settings(keys.prefix))


async def _drop_prefix(client: aioredis.Redis, prefix: str) -> None:
    async for key in client.scan_iter(match="{" + prefix + "}*", count=1000):
        await client.delete(key)


@pytest.fixture(scope="session")
def postgres_url() -> str | None:
    """A PostgreSQL URL, or None where none can be found (tests marked postgres skip then)."""
    url = os.environ.get("PIPELINE_TEST_DATABASE_URL")
    if url:
        return url
    if _port_open("127.0.0.1", 5432):
        return "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    return None


@pytest.fixture
def pipeline_env(
    tmp_path: Path, redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Environment for a `pipeline` subprocess or in-process settings using the test services."""
    env = {
        "PIPELINE_HOME": str(tmp_path / "home"),
        "PIPELINE_REDIS_URL": redis_url,
        "PIPELINE_KEY_PREFIX": key_prefix,
        "PIPELINE_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "PIPELINE_PROVIDER": "offline",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from pipeline.settings import get_settings

    get_settings.cache_clear()
    return env
