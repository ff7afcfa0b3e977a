"""A `pipeline worker` SIGKILLed mid-call, as a user then reads the batch: `pipeline status`
(text and --json), the API's /batches/{id} and /jobs/{id} and the dashboard all say the
document's worker is lost, when its lease runs out and what becomes of the job then, and the
money held for its call in flight — the amount `pipeline costs` reports as not settled yet.
Nothing is shown as running on a worker that is gone (the field report: "running …
analysing 1 page" for two minutes under "workers (0 alive)").

Real Redis, the real google-genai client against the emulator (a call that takes long enough
to be killed in), real `pipeline` subprocesses, the API in-process over ASGI.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from pipeline.queue import QueueClient
from pipeline.queue.job import State
from pipeline.redis.connection import connect_redis
from pipeline.settings import load_settings
from tests.support.api import api_client, api_settings
from tests.support.cli import EXAMPLES, run_cli
from tests.support.emulator import start_emulator
from tests.support.waiting import eventually
from tests.support.workers import FAST, WorkerProcess

pytestmark = pytest.mark.slow


async def test_a_killed_workers_document_says_worker_lost_with_its_lease_and_held_money(
    pipeline_env: dict[str, str], redis_url: str, tmp_path: object
) -> None:
    prefix = pipeline_env["PIPELINE_KEY_PREFIX"]
    with start_emulator(latency_s=(20.0, 20.0)) as emu:
        env = {**pipeline_env, **emu.env, "GOOGLE_API_KEY": "",
               "PIPELINE_HEARTBEAT_INTERVAL_S": str(FAST["heartbeat_interval_s"])}  # fmt: skip
        sub = run_cli(env, "submit", EXAMPLES[0], "--json")
        assert sub.returncode == 0, sub.stderr
        batch = json.loads(sub.stdout)["batch_id"]
        job_id = json.loads(sub.stdout)["documents"][0]["job_id"]
        settings = load_settings(key_prefix=prefix)
        client = QueueClient(connect_redis(redis_url), settings=settings)
        worker = WorkerProcess(redis_url, prefix, imports=("tasks.analyze",), **env)
        try:

            async def in_flight() -> bool:
                return (await asyncio.to_thread(emu.stats))["in_flight"] >= 1

            await eventually(in_flight, 60, "the call in flight")
            worker.kill()  # SIGKILL mid-call: its lease and its ledger row are all that is left
            await eventually(lambda: _no_workers(client), 30, "the heartbeat to expire")
            job = await client.get(job_id)
            assert job.state == State.ACTIVE and job.attempt == 1  # the lease still holds it
            assert job.lease_deadline_ms is not None
        finally:
            worker.close()

        costs = json.loads(run_cli(env, "costs", "--format", "json").stdout)["total"]
        assert costs["in_flight_calls"] == 1
        held = costs["in_flight_usd"]
        assert Decimal(held) > 0
        at = f"{datetime.fromtimestamp(job.lease_deadline_ms / 1000, UTC):%H:%M:%S} UTC"
        lost = (f"lost (its heartbeat stopped); requeued (attempt 1/{job.max_attempts}) when "
                f"its lease runs out at {at}; ${held} held for its call in flight")  # fmt: skip

        as_json = json.loads(run_cli(env, "status", batch, "--json").stdout)
        [doc] = as_json["documents"]
        assert doc["status"] == "waiting" and lost in doc["reason"], doc
        assert doc["held_usd"] == held and as_json["held_usd"] == held
        [waiting] = as_json["waiting"]
        assert waiting["kind"] == "worker_lost" and waiting["job_id"] == job_id
        assert datetime.fromisoformat(waiting["until"]) == datetime.fromtimestamp(
            job.lease_deadline_ms // 1000, UTC
        )

        text = run_cli(env, "status", batch, columns=400).stdout
        assert "running" not in text and "analysing" not in text, text
        assert lost in text and "held USD" in text, text
        assert f"${held} held for calls in flight" in text, text
        assert "1 job waiting: for a lost worker's lease to run out" in text, text

        api = api_settings(tmp_path, redis_url, prefix)  # type: ignore[arg-type]
        async with api_client(api) as (http, _):
            body = (await http.get(f"/batches/{batch}")).json()
            assert body["documents"][0]["status"] == "waiting"
            assert lost in body["documents"][0]["reason"] and body["held_usd"] == held
            state = (await http.get("/dashboard/state")).json()
            [row] = [b for b in state["batches"] if b["id"] == batch]
            assert row["held_usd"] == held and row["counts"] == {"waiting": 1}
            assert any(lost in w["reason"] for w in row["waiting"]), row
            panels = (await http.get("/dashboard/panels")).text
            assert f"+ ${held} held for calls in flight" in panels
            assert re.search(r"worker \S+ lost \(its heartbeat stopped\)", panels)
            # the job's own view: still leased in the queue, and saying its worker is gone;
            # the call in flight is held, not spent
            one = (await http.get(f"/jobs/{job_id}")).json()
            assert one["status"] == "active", one
            assert one["state"]["status"] == "waiting", one
            assert one["state"]["kind"] == "worker_lost" and lost in one["state"]["reason"]
            assert one["cost"]["held_usd"] == held and one["cost"]["in_flight_calls"] == 1
            assert one["cost"]["cost_usd"] == "0.000000000" and one["cost"]["calls"] == 0
            # /metrics: the emulator's call, held, and no dollar of it booked as spent
            metrics = (await http.get("/metrics")).text
            held_line = re.search(r'^pipeline_llm_held_usd\{[^}]*provider="emulator"[^}]*\} (\S+)$',
                                  metrics, re.M)  # fmt: skip
            assert held_line and Decimal(held_line[1]) == Decimal(held), metrics
            booked = re.findall(r'^pipeline_llm_cost_usd_total\{([^}]*)\} (\S+)$', metrics, re.M)
            assert booked and all('provider="emulator"' in labels for labels, _ in booked)
            assert sum(float(v) for _, v in booked) == 0.0, booked
        await client.aclose()


async def _no_workers(client: QueueClient) -> bool:
    return not await client.workers()
