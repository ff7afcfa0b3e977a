"""Hand-offs: a job enqueued while a worker waits idle goes straight to that worker, claimed
for it by enqueue.lua, so it starts without a claim round trip of the worker's own.

Without this, an idle worker's path to a new job is: its blocking pop returns a wake token,
then claim.lua (a round trip), then the task. Here the worker registers itself as idle in the
same pipeline as its blocking pop (idle.lua: its id, queues, own wake list and task
definitions, standing for `REGISTRATION_MS`), and enqueue.lua, finding a registration for the
job's queue and nothing ahead of the job, claims the job for that worker exactly as claim.lua
would (fencing token, lease from the worker's definitions, `active` event) and pushes the
job's hash onto the worker's own wake list, where the pop returns it.

What does not change: one job per free slot (a registration is made with a free slot, taken
with the one job it receives, and removed by the worker before it claims anything else, in
one transaction that also collects a hand-off that raced in); leases and fencing (the job is
leased and fenced as a claim is; its first deadline is `FIRST_LEASE_MS` away, short so a job
handed to a worker that died idle comes back soon, and the receiving worker renews it to its
full lease at the next liveness tick); the events followers read (`queued`, then `active`).
Workers with an admission gate (each job shown to the gate first) or with a replica to wait
for (a claim waits for one) never register, nor does a Cluster client; their jobs wait in
the queue as before.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from pipeline.queue.scripts import Scripts
from pipeline.redis.connection import text
from pipeline.redis.keys import Keys
from pipeline.redis.lean import pipelined

REGISTRATION_MS = 3000  # the pop waits 1 s; a registration outlives one wait, with slack
FIRST_LEASE_MS = 10_000  # a handed job's first lease deadline, renewed at the next tick


class Handoff:
    """One worker's registration as idle. `wait(wake_keys, defs, min_lease_ms)` registers,
    blocks on `wake_keys` for up to 1 s and returns (job hashes handed over, the pop's other
    reply or None); `leave()` removes the registration and returns what was handed over
    meanwhile. Raises RedisError as the pop would."""

    def __init__(self, redis: Redis, keys: Keys, scripts: Scripts, worker_id: str,
                 queues: Sequence[str]) -> None:  # fmt: skip
        self.redis, self.keys, self.scripts = redis, keys, scripts
        self.worker_id = worker_id
        self.own_wake = keys.worker_wake(worker_id)
        self.queues = list(queues)
        self._payload: tuple[str, str] = ("", "")  # (definitions it was made from, JSON)
        self.handed = 0  # jobs received this way (for the profile)

    def _registration(self, defs: str, min_lease_ms: int) -> str:
        if self._payload[0] != defs:  # `defs` is claim.lua's JSON already: spliced, not parsed
            head = json.dumps({"wake": self.own_wake, "queues": self.queues,
                               "min_lease_ms": min_lease_ms})  # fmt: skip
            self._payload = (defs, f'{head[:-1]}, "defs": {defs}}}')
        return self._payload[1]

    async def wait(
        self, wake_keys: Sequence[str], defs: str, min_lease_ms: int
    ) -> tuple[list[dict[str, str]], tuple[str, str] | None]:
        k = self.keys
        args = [self.worker_id, REGISTRATION_MS, self._registration(defs, min_lease_ms)]
        registered, popped = await pipelined(self.redis, (
            ("EVALSHA", self.scripts.idle.sha, 2, k.idle, k.idle_workers, *args),
            ("BLPOP", *wake_keys, 1)))  # fmt: skip
        if isinstance(popped, Exception):
            raise popped
        if isinstance(registered, NoScriptError):  # a restarted Redis: register next time
            await self.redis.script_load(self.scripts.idle.script)
        elif isinstance(registered, Exception):
            raise registered
        if popped:
            key, value = text(popped[0]), text(popped[1])
            if key == self.own_wake and value.startswith("{"):  # the registration was taken
                self.handed += 1
                return [json.loads(value)], None
            return await self.leave(), (key, value)
        return await self.leave(), None

    async def leave(self) -> list[dict[str, str]]:
        """Unregister; return the jobs handed over before that (at most one), to be started:
        they are claimed for this worker already. Other entries of the own wake list (a stop
        token) are dropped: the worker's stop flag says the same."""
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(k.idle, self.worker_id)
            pipe.hdel(k.idle_workers, self.worker_id)
            pipe.lrange(self.own_wake, 0, -1)
            pipe.delete(self.own_wake)
            replies: list[Any] = await pipe.execute()
        handed = [json.loads(v) for v in map(text, replies[2]) if v.startswith("{")]
        self.handed += len(handed)
        return handed
