"""Celery side of the peers benchmark: the app, its tasks, and how the driver talks to it.

Configured as Celery's docs describe for slow work on the Redis transport: JSON, results
ignored, `task_acks_late=True` (so a crashed worker's job is redelivered), the default
`worker_prefetch_multiplier` (4) and the default prefork pool. `PEERS_VISIBILITY_TIMEOUT_S`
sets the Redis transport's `visibility_timeout` for the ghost trap (default 3600 s) and, as
kombu's docs advise for a low one, sweeps for overdue messages every V seconds.

Worker: `celery -A bench.peers_celery worker -Q $PEERS_QUEUE -c N` (run by the driver).
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery
from celery.signals import worker_ready

from bench.peers_record import mark_ready, record

QUEUE = os.environ.get("PEERS_QUEUE", "peers")
app = Celery("peers", broker=os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:6379/15"))
_transport: dict[str, Any] = {}
if os.environ.get("PEERS_VISIBILITY_TIMEOUT_S"):
    # A low visibility_timeout, with the sweep kombu's docs say to pair it with: every
    # `unacked_restore_interval` s instead of the default 10 s x throttle 10 (~100 s).
    _transport["visibility_timeout"] = float(os.environ["PEERS_VISIBILITY_TIMEOUT_S"])
    _transport["unacked_restore_interval"] = float(os.environ["PEERS_VISIBILITY_TIMEOUT_S"])
    _transport["unacked_restore_throttle"] = 1
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    task_default_queue=QUEUE,
    broker_transport_options=_transport,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@worker_ready.connect
def _ready(**_: Any) -> None:
    mark_ready(f"celery-{os.getpid()}")


@app.task(name="peers.stamp")
def stamp(tag: str) -> None:
    record("start", tag)


@app.task(name="peers.noop")
def noop(tag: str) -> None:
    record("done", tag)


@app.task(name="peers.sleep")
def sleep(tag: str, seconds: float) -> None:
    record("start", tag)
    time.sleep(seconds)
    record("end", tag)


class Adapter:
    name = "celery"
    bulk_api = None  # `group(...).apply_async()` publishes one message at a time

    def __init__(self, url: str, queue: str) -> None:
        self.queue = queue
        self.queue_name = queue
        app.conf.broker_url = url  # the driver's own environment has no PEERS_REDIS_URL
        self.tasks = {"stamp": stamp, "noop": noop, "sleep": sleep}

    def worker_cmd(self, venv_bin: str, slots: int, name: str) -> list[str]:
        return [f"{venv_bin}/celery", "-A", "bench.peers_celery", "worker", "-Q", self.queue,
                "-c", str(slots), "-n", f"{name}@%h", "--loglevel", "WARNING"]

    def worker_env(self, slots: int, timeout_s: float | None) -> dict[str, str]:
        return {"PEERS_VISIBILITY_TIMEOUT_S": str(timeout_s)} if timeout_s else {}

    def workers_per_slots(self, slots: int) -> int:
        return 1

    def enqueue(self, fn: str, *args: Any, timeout_s: float | None = None) -> None:
        self.tasks[fn].apply_async(args, queue=self.queue)

    def enqueue_each(self, fn: str, calls: list[tuple[Any, ...]]) -> None:
        task = self.tasks[fn]
        for args in calls:
            task.apply_async(args, queue=self.queue)

    def ready_count(self, redis: Any) -> int:
        return int(redis.llen("peers:ready"))

    def close(self) -> None:
        app.close()
