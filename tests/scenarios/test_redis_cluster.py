"""A three-master Redis Cluster on real servers (issue 14): the same batch as the Sentinel
scenario (half of it enqueued in bulk), plus a chord, runs to completion with real `pipeline
worker` processes, each job once, enqueues and settlements waiting for the slot master's
replica; and the limiter, budgets and ledger buffer run their scripts there too. Every key of
a prefix shares one hash tag, so each script's keys sit in one slot (CROSSSLOT otherwise)."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from pipeline.ledger.budget import Budget
from pipeline.ledger.buffer import LedgerBuffer
from pipeline.llm.limiter import Limiter, Permit
from pipeline.queue import QueueClient
from pipeline.redis.connection import connect_redis
from pipeline.redis.keys import Keys
from tests.scenarios import ha_tasks
from tests.scenarios.redis_ha import cluster
from tests.support.waiting import eventually
from tests.support.workers import WorkerProcess, fast_settings

pytestmark = pytest.mark.slow

JOBS = 60
IMPORTS = ("tests.scenarios.ha_tasks",)


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def test_a_batch_and_a_chord_complete_once_on_a_cluster(
    tmp_path: Path, key_prefix: str
) -> None:
    done_log = tmp_path / "completions.log"
    with cluster(tmp_path / "redis", replicas=1) as nodes:
        client = await QueueClient.connect(fast_settings(key_prefix, redis_url=nodes.url),
                                           long_lived=True)  # fmt: skip
        workers = [WorkerProcess(nodes.url, key_prefix, "--concurrency", "4", imports=IMPORTS)
                   for _ in range(2)]  # fmt: skip
        try:
            await eventually(lambda: _live(client, 2), timeout_s=30, what="two workers")
            handles = [await client.enqueue(ha_tasks.step, i, str(done_log))
                       for i in range(JOBS // 2)]  # fmt: skip
            # the rest in bulk: enqueue_many.lua calls, NOSCRIPT on first use, then WAIT
            handles += await client.enqueue_many([ha_tasks.step.call(i, str(done_log))
                                                  for i in range(JOBS // 2, JOBS)])  # fmt: skip
            chord = await client.group([ha_tasks.step.call(i, str(done_log)) for i in range(5)],
                                       then=ha_tasks.total.call(str(done_log)))  # fmt: skip
            # enqueues waited for the replica of the slot's master, which acknowledged each
            assert await client.replicas.replicas(client.keys.queue("default")) == 1
            assert client.replicas.unacked == 0
            waits = [n.client().info("commandstats").get("cmdstat_wait", {}).get("calls", 0)
                     for n in nodes.nodes]  # fmt: skip
            # all on the slot's master: one per job enqueued alone, one per bulk pipeline
            assert sorted(waits)[-2] == 0 and max(waits) >= JOBS // 2 + 1
            results = [await h.result(timeout_s=60) for h in handles]
            total = await chord.callback.result(timeout_s=60)
            attempts = [(await h.info()).attempt for h in handles]
            slots = {nodes.nodes[0].client().cluster("keyslot", k) for k in [
                client.keys.job(handles[0].id), client.keys.queue("default"), client.keys.active,
                client.keys.events, client.keys.group(chord.id), client.keys.task_registry,
            ]}  # fmt: skip
        finally:
            for w in workers:
                w.kill()
            logs = "".join(w.output() for w in workers)
            for w in workers:
                w.close()
            await client.aclose()
    assert results == list(range(JOBS)), logs[-3000:]
    assert total == sum(range(5))
    runs = Counter(lines(done_log)[0::3])
    assert len(runs) == JOBS + 6 and set(runs.values()) == {1}, runs.most_common(3)
    assert set(attempts) == {1} and len(slots) == 1


async def _live(client: QueueClient, n: int) -> bool:
    return len(await client.workers()) >= n


async def test_limiter_budget_and_ledger_buffer_scripts_run_on_a_cluster(
    tmp_path: Path, key_prefix: str
) -> None:
    with cluster(tmp_path / "redis") as nodes:
        redis = connect_redis(nodes.url)
        keys, settings = Keys(key_prefix), fast_settings(key_prefix)
        try:
            limiter = Limiter(redis, keys, settings)
            permit = await limiter.try_acquire("gemini-3.5-flash-lite", 100)
            assert isinstance(permit, Permit)
            assert await limiter.release(permit, 80)
            budget = Budget(redis, keys, settings)
            scopes = budget.scopes("batch-1", Decimal("1.00"))
            hold = await budget.reserve(scopes, Decimal("0.25"))
            assert await budget.settle(hold, Decimal("0.10"))
            status = await budget.status("batch-1", Decimal("1.00"))
            assert status["batch"].spent_usd == Decimal("0.10")
            buffer = LedgerBuffer(redis, keys)
            await buffer.push("call", {"n": 1})
            token = await buffer.acquire()
            assert token is not None
            await buffer.bury_head()  # LMOVE between two keys: one slot or CROSSSLOT
            await buffer.release(token)
            assert await buffer.length() == 0
            assert await redis.llen(keys.ledger_buffer_dead) == 1
        finally:
            await redis.aclose()


async def test_a_fresh_cluster_client_enqueues_as_its_first_command(
    tmp_path: Path, key_prefix: str
) -> None:
    """A one-shot `QueueClient.connect` whose first command is an enqueue: the replica count
    of the keys' master is looked up by slot before any command made the client learn the
    slots (RedisCluster maps them on its first command), and must not fail for it."""
    with cluster(tmp_path / "redis") as nodes:
        client = await QueueClient.connect(fast_settings(key_prefix, redis_url=nodes.url))
        try:
            handle = await client.enqueue(ha_tasks.step, 0, str(tmp_path / "unused.log"))
            assert (await handle.info()).id == handle.id
            many = await client.enqueue_many([ha_tasks.step.call(1, "unused")])
            assert len(many) == 1
        finally:
            await client.aclose()
