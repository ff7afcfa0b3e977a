"""Every Redis key the project uses, built in one place.

All keys share one hash tag, `{prefix}`, so every script's keys land in one Cluster slot
and one Redis (or Sentinel, or Cluster) can serve many projects side by side by prefix.
Scripts never build keys themselves: every key they touch arrives in KEYS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

EVENTS_MAXLEN = 100_000  # approximate length the progress stream is trimmed to
# `document()`'s shape under any prefix (a prefix holds no braces: settings.key_prefix)
_DOCUMENT_KEY = re.compile(r"^\{[^{}]+\}:doc:([0-9a-f]{64})$")


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

    def idempotency(self, digest: str) -> str:
        """The job id an idempotency key stands for, for its TTL; named by the key's
        digest (pipeline/queue/record.py idempotency_digest), not the key itself, so the name
        is short whatever the caller's key."""
        return self._k("idem", digest)

    def idempotency_by_key(self, key: str) -> str:
        """The same, named by the key itself, as it was before 2026-11-30: read (never
        written) by enqueue.lua, so a key set by an earlier version still dedupes until it
        expires (one idempotency TTL after an upgrade; then it no longer exists)."""
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
        """A worker's own wake list: pushed to when it is told to stop, and where enqueue.lua
        puts a job it hands to the worker while it is idle."""
        return self._k("worker-wake", worker_id)

    @property
    def idle(self) -> str:
        """Workers blocked waiting for a job, a zset scored by the ms their registration
        stands until; enqueue.lua hands a job straight to one (pipeline/queue/handoff.py)."""
        return self._k("idle")

    @property
    def idle_workers(self) -> str:
        """What enqueue.lua needs to hand a job to an idle worker (hash: worker id -> JSON of
        its own wake list, queues and task definitions)."""
        return self._k("idle-workers")

    @property
    def task_registry(self) -> str:
        """Options of every task a worker imported (hash: task name -> JSON), published when
        a worker starts, read by processes that enqueue a task by name (queue/registry.py)."""
        return self._k("tasks")

    @property
    def replication_probe(self) -> str:
        """A counter written just before WAIT, so the wait covers every earlier write
        (pipeline/redis/replication.py)."""
        return self._k("repl-probe")

    def stats(self, kind: str) -> str:
        """Counters that outlive worker processes (pipeline/queue/stats.py)."""
        return self._k("stats", kind)

    # LLM limiter and call store (used by pipeline/llm)
    def bucket(self, model: str) -> str:
        """One model's token bucket (a hash: requests, tokens, day count, pause, rate)."""
        return self._k("bucket", model)

    def bucket_leases(self, model: str) -> str:
        """One model's calls in flight, a zset scored by lease deadline (the concurrency cap)."""
        return self._k("bucket", model, "leases")

    def bucket_sent(self, model: str) -> str:
        """One model's requests in the provider's window, a zset: permit id -> when it went
        on the wire (ms), or a future "not sent yet" mark (limiter.py, bucket.lua)."""
        return self._k("bucket", model, "sent")

    def bucket_model(self, key: str) -> str | None:
        """The model whose bucket `key` is, or None for any other key (a leases zset...)."""
        head = self.bucket("")
        if not key.startswith(head) or key.endswith((":leases", ":sent")):
            return None
        return key[len(head) :] or None

    def call(self, call_key: str) -> str:
        return self._k("call", call_key)

    def batch_group(self, display_name: str) -> str:
        """A Gemini batch group (pipeline/llm/batch_group.py) by its content-derived display
        name: its keys, then the remote job's name once created, then whether it was booked."""
        return self._k("batch-group", display_name)

    def batch_group_creating(self, display_name: str) -> str:
        """The lock one worker holds while it lists and creates a group's remote job (expires
        by itself, so a dead worker's lock only delays the next)."""
        return self._k("batch-group", display_name, "creating")

    def token_count(self, prompt_hash: str) -> str:
        """A request's countTokens figure, by `LLMRequest.prompt_hash()` (model + content)."""
        return self._k("tokens", prompt_hash)

    def notice(self, kind: str, scope: str) -> str:
        """Set once when a warning of `kind` was logged for `scope` (e.g. a batch), so it is
        logged once per scope, not once per call or per worker."""
        return self._k("notice", kind, scope)

    # spend (used by pipeline/ledger)
    def budget(self, scope: str) -> str:
        return self._k("budget", scope)

    def budget_job_holds(self, job_id: str) -> str:
        """The budget holds a job's calls took (token -> JSON {lease, amount, scopes}), so
        the sweeper can settle a dead worker's holds the moment its lease is recovered."""
        return self._k("budget", "job-holds", job_id)

    @property
    def ledger_reconcile_lock(self) -> str:
        """Held by the one process rebuilding budgets and job records from the ledger."""
        return self._k("ledger", "reconcile-lock")

    def batch_budget(self, batch_id: str) -> str:
        """A batch's current budget (USD as text), read at each call so a budget raised with
        `pipeline budget BATCH --set` applies to work already queued or retried."""
        return self._k("batch-budget", batch_id)

    @property
    def ledger_buffer(self) -> str:
        """Ledger writes waiting while the database is down (a list of JSON operations)."""
        return self._k("ledger", "buffer")

    @property
    def ledger_buffer_dead(self) -> str:
        """Buffered ledger writes the database refused for good, kept for a person to read."""
        return self._k("ledger", "buffer-dead")

    @property
    def ledger_flush_lock(self) -> str:
        """Held by the one process replaying the ledger buffer."""
        return self._k("ledger", "flush-lock")

    # documents and the HTTP API (used by tasks/ and pipeline/api)
    def document(self, sha256: str) -> str:
        """The ids of the jobs holding a document's bytes in the document store (a set, by
        content hash; pipeline/storage/holds.py). The bytes themselves are never in Redis."""
        return self._k("doc", sha256)

    @staticmethod
    def every_prefix_document(sha256: str = "*") -> str:
        """A SCAN pattern for `document(sha256)` under every key prefix in this Redis (all
        documents with `*`): a document stored where prefixes shared it before 2026-11-30
        goes only when no prefix holds it (pipeline/storage/prefixed.py)."""
        return "{*}:doc:" + sha256

    @staticmethod
    def held_document(key: str) -> str | None:
        """The sha256 of a key `every_prefix_document` matched, None for a key of another
        shape the glob let through (a job id holding `}:doc:`)."""
        match = _DOCUMENT_KEY.match(key)
        return match.group(1) if match else None

    def dashboard_session(self, session_id: str) -> str:
        """A signed-in dashboard browser: which API key it signed in with (a hash of it)."""
        return self._k("session", session_id)

    def login_failures(self, client: str) -> str:
        """Failed /login attempts from one client address in the current window."""
        return self._k("login-failures", client)

    def api_idempotency(self, key: str) -> str:
        """An `Idempotency-Key` header's answer, so a retried upload returns the same jobs."""
        return self._k("api-idem", key)

    @property
    def unused(self) -> str:
        """A key no script writes, passed in KEYS slots that do not apply to a call (no group,
        no idempotency key): every key a script may touch must still be in KEYS."""
        return self._k("unused")

    def custom(self, *parts: str) -> str:
        """Only for tests that need a key of their own under the prefix."""
        return self._k(*parts)
