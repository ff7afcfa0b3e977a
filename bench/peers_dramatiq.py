"""Dramatiq side of the peers benchmark: the broker, the actors, and the driver's adapter.

Dramatiq as its docs describe: the Redis broker, threads in worker processes (defaults:
one process per CPU, 8 threads each; an idle consumer polls with a back-off of up to
`worker_timeout`, 1 s), the default middleware (Retries: up to 20 with back-off;
TimeLimit: 10 min, the ghost trap sets `time_limit` to V). The single-process figures run
`--processes 1` (threads = slots); the `dramatiq-default` column keeps its default processes
and threads. Dramatiq has no bulk enqueue (`group(...).run()` sends one message at a time),
so its bulk figure is left out.

Worker: `dramatiq bench.peers_dramatiq --processes P --threads T` with PEERS_* set.
"""

from __future__ import annotations

import os
import time
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware

from bench.peers_record import mark_ready, record

QUEUE = os.environ.get("PEERS_QUEUE", "peers")


class _Ready(Middleware):
    """Each worker process says it listens, once its consumers are up."""

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        mark_ready(f"dramatiq-{os.getpid()}")


broker = RedisBroker(url=os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:6379/15"))
broker.add_middleware(_Ready())
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="stamp", queue_name=QUEUE)
def stamp(tag: str) -> None:
    record("start", tag)


@dramatiq.actor(actor_name="noop", queue_name=QUEUE)
def noop(tag: str) -> None:
    record("done", tag)


@dramatiq.actor(actor_name="sleep", queue_name=QUEUE)
def sleep(tag: str, seconds: float) -> None:
    record("start", tag)
    time.sleep(seconds)
    record("end", tag)


class Adapter:
    name = "dramatiq"
    bulk_api = None

    def __init__(self, url: str, queue: str, *, default: bool = False) -> None:
        self.queue_name = queue
        self.default = default  # its default processes x threads, else one process
        # the broker was made at import from PEERS_REDIS_URL (the driver sets it first); the
        # actors' queue changes per scenario
        self.actors = {"stamp": stamp, "noop": noop, "sleep": sleep}
        for actor in self.actors.values():
            actor.queue_name = queue
        broker.declare_queue(queue)

    def worker_cmd(self, venv_bin: str, slots: int, name: str) -> list[str]:
        cmd = [f"{venv_bin}/dramatiq", "bench.peers_dramatiq"]
        return cmd if self.default else [*cmd, "--processes", "1", "--threads", str(slots)]

    def worker_env(self, slots: int, timeout_s: float | None) -> dict[str, str]:
        return {}

    def workers_per_slots(self, slots: int) -> int:
        return 1

    @property
    def ready_per_worker(self) -> int:
        return (os.cpu_count() or 1) if self.default else 1

    def enqueue(self, fn: str, *args: Any, timeout_s: float | None = None) -> None:
        options = {"time_limit": int(timeout_s * 1000)} if timeout_s else {}
        self.actors[fn].send_with_options(args=args, **options)

    def enqueue_each(self, fn: str, calls: list[tuple[Any, ...]]) -> None:
        actor = self.actors[fn]
        for args in calls:
            actor.send(*args)

    def ready_count(self, redis: Any) -> int:
        return int(redis.llen("peers:ready"))

    def close(self) -> None:
        broker.client.close()
