"""Every Redis key the project uses, built in one place.

All keys share one hash tag, `{prefix}`, so every script's keys land in one Cluster slot
and one Redis (or Sentinel, or Cluster) can serve many projects side by side by prefix.
Scripts never build keys themselves: every key they touch arrives in KEYS.
"""

from __future__ import annotations

from dataclasses import dataclass

EVENTS_MAXLEN = 100_000  # approximate length the progress stream is trimmed to


@dataclass(frozen=True)
class Keys:
    prefix: str = "pipeline"

    def _k(self, *parts: str) -> str:
        return ":".join(("{" + self.prefix + "}", *parts))

    # jobs
    def job(self, job_id: str) -> str:
        return self._k("job", job_id)

    def queue(self, name: str) -> str:
        """Ready jobs of one queue, a sorted set ordered by (priority, enqueue sequence)."""
        return self._k("queue", name)

    def wake(self, name: str) -> str:
        """A list that idle workers block on; enqueue pushes a token so claims start at once."""
        return self._k("wake", name)

    @property
    def queues(self) -> str:
        """The set of queue names ever used, for status and dashboards."""
        return self._k("queues")

    @property
    def delayed(self) -> str:
        """Jobs not due yet (delay, retry back-off), scored by due time in ms."""
        return self._k("delayed")

    @property
    def active(self) -> str:
        """Claimed jobs, scored by lease deadline in ms; the sweeper reclaims expired ones."""
        return self._k("active")

    @property
    def dead(self) -> str:
        return self._k("dead")

    @property
    def seq(self) -> str:
        return self._k("seq")

    @property
    def fence(self) -> str:
        """Monotonic counter for fencing tokens."""
        return self._k("fence")

    def idempotency(self, key: str) -> str:
        return self._k("idem", key)

    @property
    def events(self) -> str:
        return self._k("events")

    # chords
    def group(self, group_id: str) -> str:
        return self._k("group", group_id)

    def group_results(self, group_id: str) -> str:
        return self._k("group", group_id, "results")

    # workers
    @property
    def workers(self) -> str:
        return self._k("workers")

    def worker(self, worker_id: str) -> str:
        return self._k("worker", worker_id)

    def worker_wake(self, worker_id: str) -> str:
        """A worker's own wake list, pushed to when it is told to stop."""
        return self._k("worker-wake", worker_id)

    def stats(self, kind: str) -> str:
        """Counters that outlive worker processes (pipeline/queue/stats.py)."""
        return self._k("stats", kind)

    # LLM limiter and call store (used by pipeline/llm)
    def bucket(self, model: str) -> str:
        return self._k("bucket", model)

    def call(self, call_key: str) -> str:
        return self._k("call", call_key)

    # spend (used by pipeline/ledger)
    def budget(self, scope: str) -> str:
        return self._k("budget", scope)

    @property
    def ledger_buffer(self) -> str:
        return self._k("ledger", "buffer")

    def custom(self, *parts: str) -> str:
        """For modules outside the queue core that need a key of their own."""
        return self._k(*parts)
