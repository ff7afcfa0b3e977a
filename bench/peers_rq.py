"""RQ side of the peers benchmark: the tasks, a worker launcher, and the driver's adapter.

RQ as its docs describe: one job at a time per worker, each job in a forked work horse,
the default serializer, `job_timeout` per job (the ghost trap sets it to V; past it RQ
kills the horse and fails the job). Concurrency N means N worker processes.

Worker: `python -m bench.peers_rq QUEUE NAME` (the same as `rq worker QUEUE`, plus a
ready mark so the driver knows it listens).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from bench.peers_record import mark_ready, record


def stamp(tag: str) -> None:
    record("start", tag)


def noop(tag: str) -> None:
    record("done", tag)


def sleep(tag: str, seconds: float) -> None:
    record("start", tag)
    time.sleep(seconds)
    record("end", tag)


class Adapter:
    name = "rq"
    bulk_api = "Queue.enqueue_many"

    def __init__(self, url: str, queue: str) -> None:
        from redis import Redis
        from rq import Queue

        self.redis = Redis.from_url(url)
        self.queue = Queue(queue, connection=self.redis)
        self.queue_name = queue

    def worker_cmd(self, venv_bin: str, slots: int, name: str) -> list[str]:
        return [f"{venv_bin}/python", "-m", "bench.peers_rq", self.queue_name, name]

    def worker_env(self, slots: int, timeout_s: float | None) -> dict[str, str]:
        return {}

    def workers_per_slots(self, slots: int) -> int:
        return slots

    def enqueue(self, fn: str, *args: Any, timeout_s: float | None = None) -> None:
        self.queue.enqueue(f"bench.peers_rq.{fn}", *args, job_timeout=timeout_s or 600)

    def enqueue_each(self, fn: str, calls: list[tuple[Any, ...]]) -> None:
        for args in calls:
            self.enqueue(fn, *args)

    def enqueue_many(self, fn: str, calls: list[tuple[Any, ...]]) -> None:
        from rq import Queue

        for start in range(0, len(calls), 1000):
            batch = [Queue.prepare_data(f"bench.peers_rq.{fn}", args=args)
                     for args in calls[start:start + 1000]]
            self.queue.enqueue_many(batch)

    def ready_count(self, redis: Any) -> int:
        return int(redis.llen("peers:ready"))

    def close(self) -> None:
        self.redis.close()


def main() -> None:
    from redis import Redis
    from rq import Queue, Worker

    queue_name, name = sys.argv[1], sys.argv[2]
    conn = Redis.from_url(os.environ["PEERS_REDIS_URL"])
    worker = Worker([Queue(queue_name, connection=conn)], connection=conn,
                    name=f"{name}-{os.getpid()}")
    mark_ready(worker.name)
    worker.work(logging_level="WARNING")


if __name__ == "__main__":
    main()
