"""Real Redis high-availability setups for scenario tests, from the system binaries: a master
with a replica watched by three Sentinels, and a three-master Cluster. Every server listens on
a free 127.0.0.1 port with its files in a temporary folder, and is ended by its pid.

`redis-sentinel` is the sentinel binary; where only `redis-server` exists, it runs the same
code with `--sentinel` (https://redis.io/docs/latest/operate/oss_and_stack/management/sentinel/).
A missing binary skips the test and names `make redis-ha`, which installs them.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

SETUP_HINT = "run `make redis-ha` (installs redis-server and redis-tools)"


def binaries(*names: str) -> dict[str, str]:
    found = {name: shutil.which(name) for name in names}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not found; {SETUP_HINT}")
    return {name: str(path) for name, path in found.items()}


def sentinel_command() -> list[str]:
    if shutil.which("redis-sentinel"):
        return [str(shutil.which("redis-sentinel"))]
    return [binaries("redis-server")["redis-server"], "--sentinel"]


def free_port(bus: bool = False) -> int:
    """A free loopback port (and, for a Cluster node, its bus port +10000 free too)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not bus:
            return port
        if port < 55000:
            with socket.socket() as s, contextlib.suppress(OSError):
                s.bind(("127.0.0.1", port + 10000))
                return port
    raise RuntimeError("no free port pair found")


@dataclass
class Server:
    """One redis-server or sentinel process: `kill()` is SIGKILL by pid (no shutdown save)."""

    name: str
    port: int
    folder: Path
    proc: subprocess.Popen[bytes]

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def log(self) -> str:
        path = self.folder / "server.log"
        return path.read_text() if path.exists() else ""


def start(name: str, command: list[str], conf: str, folder: Path, port: int) -> Server:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "redis.conf").write_text(
        f"port {port}\nbind 127.0.0.1\ndir {folder}\nlogfile {folder / 'server.log'}\n"
        f"save \"\"\nappendonly no\n{conf}"
    )
    proc = subprocess.Popen([command[0], str(folder / "redis.conf"), *command[1:]],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    server = Server(name, port, folder, proc)
    deadline = time.monotonic() + 20
    while True:
        try:
            if server.client().ping():
                return server
        except redis.RedisError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"{name} did not start on port {port}: {server.log()[-2000:]}")
        time.sleep(0.05)


def wait_for(check: object, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


@dataclass
class SentinelSet:
    master: Server
    replica: Server
    sentinels: list[Server]
    service: str = "mymaster"

    @property
    def url(self) -> str:
        nodes = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{nodes}/{self.service}/0"

    def master_port(self) -> int:
        addr = self.sentinels[0].client().sentinel_get_master_addr_by_name(self.service)
        assert isinstance(addr, tuple), addr
        return int(addr[1])


@contextlib.contextmanager
def sentinel_set(tmp: Path, down_after_ms: int = 1000) -> Iterator[SentinelSet]:
    """A master, its replica and three sentinels (quorum 2), ready: the replica in sync and
    every sentinel knowing the replica and the two other sentinels."""
    server = binaries("redis-server")["redis-server"]
    sentinel = sentinel_command()
    started: list[Server] = []
    try:
        fast_sync = "repl-diskless-sync yes\nrepl-diskless-sync-delay 0\n"
        master = start("master", [server], fast_sync, tmp / "master", free_port())
        started.append(master)
        replica = start("replica", [server], f"{fast_sync}replicaof 127.0.0.1 {master.port}\n",
                        tmp / "replica", free_port())  # fmt: skip
        started.append(replica)
        wait_for(lambda: replica.client().info("replication")["master_link_status"] == "up",
                 "the replica in sync")  # fmt: skip
        conf = (
            f"sentinel monitor mymaster 127.0.0.1 {master.port} 2\n"
            f"sentinel down-after-milliseconds mymaster {down_after_ms}\n"
            "sentinel failover-timeout mymaster 10000\n"
            "sentinel parallel-syncs mymaster 1\n"
        )
        sentinels = []
        for i in range(3):
            s = start(f"sentinel{i}", sentinel, conf, tmp / f"sentinel{i}", free_port())
            started.append(s)
            sentinels.append(s)
        for s in sentinels:
            wait_for(lambda s=s: len(s.client().sentinel_slaves("mymaster")) == 1
                     and len(s.client().sentinel_sentinels("mymaster")) == 2,
                     f"{s.name} to know the replica and the other sentinels")  # fmt: skip
        yield SentinelSet(master, replica, sentinels)
    finally:
        for s in reversed(started):
            s.kill()


@dataclass
class Cluster:
    nodes: list[Server]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])


@contextlib.contextmanager
def cluster(tmp: Path, masters: int = 3, replicas: int = 0) -> Iterator[Cluster]:
    """`masters` redis-server nodes (each with `replicas` replicas) joined by `redis-cli
    --cluster create`, every slot served and every replica in sync."""
    found = binaries("redis-server", "redis-cli")
    started: list[Server] = []
    try:
        conf = "cluster-enabled yes\ncluster-config-file nodes.conf\ncluster-node-timeout 2000\n"
        for i in range(masters * (1 + replicas)):
            node = start(f"node{i}", [found["redis-server"]], conf, tmp / f"node{i}",
                         free_port(bus=True))  # fmt: skip
            started.append(node)
        create = subprocess.run(
            [found["redis-cli"], "--cluster", "create",
             *(f"127.0.0.1:{n.port}" for n in started), "--cluster-replicas", str(replicas),
             "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert create.returncode == 0, create.stdout + create.stderr
        for n in started:
            wait_for(lambda n=n: n.client().cluster("info")["cluster_state"] == "ok",
                     f"{n.name}: cluster_state ok")  # fmt: skip
            wait_for(lambda n=n: n.client().info("replication")["role"] == "master"
                     or n.client().info("replication")["master_link_status"] == "up",
                     f"{n.name}: in sync with its master")  # fmt: skip
        yield Cluster(started)
    finally:
        for n in reversed(started):
            n.kill()
