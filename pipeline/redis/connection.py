"""One way to open Redis: a bounded connection pool with retries and back-off on dropped
connections, to one server, to the master a set of Sentinels names, or to a Cluster.

URLs (PIPELINE_REDIS_URL):
- `redis://[user:pass@]host:6379/0`, `rediss://…`, `unix:///path/to/redis.sock?db=0`: one server.
- `redis+sentinel://[user:pass@]host:26379,host2:26379/mymaster/0`: redis-py's `Sentinel`
  asks the sentinels for the master of service `mymaster` and finds the new one after a
  failover (user and password are the data nodes'; `?sentinel_password=` for the sentinels').
- `redis+cluster://[user:pass@]host:7000[,host2:7001]`: redis-py's `RedisCluster`, started from
  these nodes. Every key of a prefix shares one hash tag (keys.py), so every script's keys
  are in one slot.

Blocking pool: redis-py's default asyncio pool raises "Too many connections" once 100 are in
use, which 10,000 jobs finishing at once will do; a blocking pool makes the burst wait its
turn. Retries: a Redis restart or failover (the embedded server coming back from its
append-only file, Sentinel promoting a replica) then costs workers and clients a pause, not
a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs, unquote

import redis as syncredis
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, ReadOnlyError, TimeoutError
from redis.retry import Retry as SyncRetry

from pipeline.errors import SettingsError
from pipeline.redis.lean import LeanBlockingPool, LeanRedis
from pipeline.redis.wire import fast_wire

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
# Errors a failover or restart raises for a while, and that a retry rides out. ReadOnlyError:
# a connection still open to a master that was demoted to a replica.
RETRY_ON = [ConnectionError, TimeoutError, BusyLoadingError, ConnectionResetError, ReadOnlyError]


@dataclass(frozen=True)
class HaTarget:
    """A parsed Sentinel or Cluster URL: the nodes to start from, the Sentinel service name and
    database (Sentinel only), credentials of the data nodes, and TLS."""

    kind: str  # sentinel | cluster
    nodes: list[tuple[str, int]]
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    options: dict[str, str] = field(default_factory=dict)


class FollowMaster(SentinelManagedConnection):
    """A Sentinel-managed connection that asks the sentinels for the master on every
    reconnect. redis-py's (8.1) asks only when the pool opens a new connection: a command's
    retry reconnects the connection it was sent on to its last address (send_packed_command
    -> connect_check_health), so after a failover it kept knocking on the dead master for its
    whole retry budget (seen in tests/scenarios/test_redis_sentinel.py)."""

    async def _connect(self) -> None:
        if self.connection_pool.is_master:
            self.host, self.port = await self.connection_pool.get_master_address()
        await super()._connect()  # type: ignore[no-untyped-call]


class FollowMasterSSL(FollowMaster, SentinelManagedSSLConnection):
    pass


class FollowMasterSync(syncredis.sentinel.SentinelManagedConnection):
    """FollowMaster for the synchronous client (the liveness thread's)."""

    def _connect(self) -> Any:
        if self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        return super()._connect()  # type: ignore[no-untyped-call]


class FollowMasterSyncSSL(FollowMasterSync, syncredis.sentinel.SentinelManagedSSLConnection):
    pass


def parse_ha_url(url: str) -> HaTarget | None:
    """A Sentinel or Cluster URL parsed, None for any other URL. Raises SettingsError naming
    the expected shape when the URL is malformed."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SENTINEL_SCHEMES + CLUSTER_SCHEMES:
        return None
    kind = "sentinel" if scheme in SENTINEL_SCHEMES else "cluster"
    shape = (
        "redis+sentinel://[user:password@]host:26379[,host2:26379]/service_name[/db]"
        if kind == "sentinel"
        else "redis+cluster://[user:password@]host:port[,host2:port]"
    )
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    creds, _, hosts = netloc.rpartition("@")
    user, _, password = creds.partition(":")
    nodes: list[tuple[str, int]] = []
    parts: list[str] = []
    service, db = "", 0
    try:
        for item in hosts.split(","):
            host, _, port = item.strip().rpartition(":")
            nodes.append((host.strip("[]"), int(port)))
        parts = [p for p in path.split("/") if p]
        service = parts[0] if parts else ""
        db = int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        nodes = []
    if not nodes or not all(h for h, _ in nodes) or (kind == "sentinel" and not service):
        raise SettingsError(f"PIPELINE_REDIS_URL {url!r}: expected {shape}")
    if kind == "cluster" and parts:
        raise SettingsError(
            f"PIPELINE_REDIS_URL {url!r}: a Redis Cluster has one database; expected {shape}"
        )
    return HaTarget(
        kind, nodes, service, db, unquote(user) or None, unquote(password) or None,
        scheme.startswith("rediss"), {k: v[-1] for k, v in parse_qs(query).items()},
    )  # fmt: skip


def connect_redis(
    url: str, *, max_connections: int = 64, retries: int = 20, wait_for_connection_s: float = 60.0
) -> Redis:
    """An asyncio client for `url` (see the module docstring for the URL forms), replies
    decoded to str. A Cluster client (redis-py's RedisCluster) is typed as Redis: it speaks
    the same commands for keys of one slot, which is all this project sends.
    Raises SettingsError for a malformed Sentinel or Cluster URL."""
    common: dict[str, Any] = {
        "decode_responses": True,
        "health_check_interval": 30,
        "retry": Retry(ExponentialBackoff(cap=2.0, base=0.05), retries),
        "retry_on_error": RETRY_ON,
    }
    ha = parse_ha_url(url)
    if ha is None:
        pool = LeanBlockingPool.from_url(
            url, max_connections=max_connections, timeout=wait_for_connection_s, **common
        )
        pool.connection_class = fast_wire(pool.connection_class)  # type: ignore[arg-type]  # TCP, Unix socket or TLS
        return LeanRedis(connection_pool=pool)
    auth: dict[str, Any] = {"username": ha.username, "password": ha.password, "ssl": ha.ssl}
    if ha.kind == "cluster":
        nodes = [ClusterNode(host, port) for host, port in ha.nodes]
        return cast(Redis, RedisCluster(startup_nodes=nodes, max_connections=max_connections,
                                        **auth, **common))  # fmt: skip
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        ha.nodes,
        sentinel_kwargs={"password": ha.options.get("sentinel_password"), "socket_timeout": 2.0},
    )
    # Sentinel's pool does not block when full; give it room for a burst instead.
    master = sentinel.master_for(
        ha.service, db=ha.db, max_connections=4 * max_connections,
        connection_class=fast_wire(FollowMasterSSL if ha.ssl else FollowMaster), **auth, **common,
    )  # fmt: skip
    return cast(Redis, master)


def sync_twin(client: Redis, *, retries: int = 20) -> syncredis.Redis:
    """A synchronous client to the same server, master or Cluster as the asyncio `client`
    (for a thread that must keep talking to Redis while the event loop is blocked): same
    host, port or socket, database, credentials and TLS, its own connections. A Cluster or
    Sentinel twin is typed as Redis like connect_redis's."""
    common: dict[str, Any] = {
        "decode_responses": True,
        "health_check_interval": 30,
        "retry": SyncRetry(ExponentialBackoff(cap=2.0, base=0.05), retries),
        "retry_on_error": RETRY_ON,
        "socket_timeout": 10.0,
    }
    if isinstance(client, RedisCluster):
        known = client.get_nodes() or list(client.startup_nodes)  # before its first command
        nodes = [syncredis.cluster.ClusterNode(n.host, n.port) for n in known]
        kw = client.connection_kwargs
        return cast(syncredis.Redis, syncredis.RedisCluster(
            startup_nodes=nodes, username=kw.get("username"), password=kw.get("password"),
            ssl=issubclass(known[0].connection_class, SSLConnection), **common))  # fmt: skip
    pool = client.connection_pool
    kw = pool.connection_kwargs
    auth: dict[str, Any] = {
        "username": kw.get("username"), "password": kw.get("password"), "db": kw.get("db", 0)
    }  # fmt: skip
    if isinstance(pool, SentinelConnectionPool):
        addresses = [
            node.connection_pool.connection_kwargs for node in pool.sentinel_manager.sentinels
        ]
        sentinels = [(a["host"], a["port"]) for a in addresses]
        manager = syncredis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            sentinels, sentinel_kwargs=pool.sentinel_manager.sentinel_kwargs
        )
        ssl = issubclass(pool.connection_class, SSLConnection)
        master = manager.master_for(  # type: ignore[no-untyped-call]
            pool.service_name, connection_class=FollowMasterSyncSSL if ssl else FollowMasterSync,
            **auth, **common,
        )  # fmt: skip
        return cast(syncredis.Redis, master)
    if issubclass(pool.connection_class, UnixDomainSocketConnection):
        return syncredis.Redis(unix_socket_path=kw["path"], **auth, **common)
    return syncredis.Redis(
        host=kw.get("host", "localhost"),
        port=kw.get("port", 6379),
        ssl=issubclass(pool.connection_class, SSLConnection),
        **auth,
        **common,
    )


# Replies come back decoded (decode_responses=True), but redis-py types them loosely; these
# say so once, for the type checker.
def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def texts(values: object) -> list[str]:
    return [text(v) for v in cast(list[object], values)]


def hash_reply(value: object) -> dict[str, str]:
    return {text(k): text(v) for k, v in cast(dict[object, object], value).items()}
