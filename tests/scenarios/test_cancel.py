"""Cancel stops queued and running work: `pipeline cancel BATCH` ends queued documents at once
and the running one at its worker's next lease renewal, its call in flight booked `abandoned`
at its worst case; nothing runs after. Then the API's cancel and retry routes on a batch with
no worker. Real Redis, SQLite, a `pipeline worker` process, google-genai against the emulator."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine, select

from pipeline.ledger.models import LLMCall
from pipeline.redis.keys import Keys
from tests.scenarios.helpers import analysis_worker, status_json
from tests.support.api import api_client, api_settings, pdf_files
from tests.support.cli import EXAMPLES
from tests.support.cli import run_cli as cli
from tests.support.emulator import start_emulator
from tests.support.pdfs import make_pdf
from tests.support.waiting import until

pytestmark = pytest.mark.slow


def _calls(env: dict[str, str]) -> list[Any]:
    engine = create_engine(env["PIPELINE_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(LLMCall.outcome, LLMCall.cost_usd,
                                            LLMCall.estimated_cost_usd)))  # fmt: skip
    finally:
        engine.dispose()



def test_cancel_ends_queued_work_at_once_and_running_work_cooperatively(
    pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis
) -> None:
    with start_emulator(latency_s=(30.0, 30.0)) as emu:
        env = {**pipeline_env, **emu.env, "GOOGLE_API_KEY": ""}
        worker = analysis_worker(redis_url, env, "--concurrency", "1")
        try:
            sub = cli(env, "submit", *EXAMPLES[:3], "--json")
            assert sub.returncode == 0, sub.stderr
            batch = json.loads(sub.stdout)["batch_id"]
            until(lambda: any(c.outcome == "started" for c in _calls(env)), 60,
                   "a call in flight")  # fmt: skip
            data = status_json(env, batch)
            assert sorted(data["by_state"].items()) == [("queued", 2), ("running", 1)], data

            r = cli(env, "cancel", batch[:12], "--json")
            assert r.returncode == 0, r.stderr
            done = json.loads(r.stdout)
            # The queued two end at once whatever the load: the cancel flags the running job
            # only after them (the worker's log shows any other job that started)
            assert (done["cancelled"], done["cancelling"]) == (2, 1), (done,
                                                                     worker.output()[-4000:])

            # A running job's worker notices the cancel within a liveness tick (a second),
            # long before its 30 s call would have answered.
            until(lambda: status_json(env, batch)["by_state"] == {"cancelled": 3}, 180,
                   "every document cancelled")  # fmt: skip
            calls = _calls(env)
            assert [c.outcome for c in calls] == ["abandoned"]  # booked as such, not $0
            assert Decimal(str(calls[0].cost_usd)) == Decimal(str(calls[0].estimated_cost_usd))
            assert Decimal(str(calls[0].cost_usd)) > 0
            sent = emu.stats()["generate_requests"]
            time.sleep(2)
            assert emu.stats()["generate_requests"] == sent == 1  # nothing ran after
            # A flag frees the worker's slot within a liveness tick and it claims its queue's
            # next job: had the running job been flagged before the queued ones ended, a slow
            # cancel (its round trips under load) would have let one of them start and send a
            # paid call. So the order is the invariant: no job of the batch still queued when
            # the running one was flagged, none claimed after the cancel began.
            events = [f for _, f in sredis.xrange(Keys(env["PIPELINE_KEY_PREFIX"]).events)
                      if f["batch"] == batch]  # fmt: skip
            states = [f["state"] for f in events]
            began = min(states.index("cancelled"), states.index("cancelling"))
            assert states[began:states.index("cancelling")] == ["cancelled"] * 2, events
            assert "active" not in states[began:], events
            assert "analyze_document cancelled in" in worker.output()  # its log line
        finally:
            worker.close()


async def test_api_cancels_a_job_then_the_batch_and_retry_starts_new_runs(
    tmp_path: Path, redis_url: str, key_prefix: str, aredis: object
) -> None:
    settings = api_settings(tmp_path, redis_url, key_prefix)
    docs = [(f"d{i}.pdf", make_pdf(1, f"Document {i}, page {{n}}.")) for i in range(2)]
    async with api_client(settings) as (client, _):
        body = (await client.post("/analyze", files=pdf_files(*docs))).json()
        batch, (first, second) = body["batch_id"], body["documents"]
        view = (await client.get(f"/batches/{batch}")).json()
        assert view["by_state"] == {"waiting": 2}  # no worker serves the queue
        assert {w["kind"] for w in view["waiting"]} == {"no_worker"}

        one = await client.post(f"/jobs/{first['job_id']}/cancel")
        assert one.status_code == 200 and one.json()["jobs"] == {first["job_id"]: "cancelled"}
        assert (await client.post("/jobs/nope/cancel")).status_code == 404
        view = (await client.get(f"/batches/{batch[:12]}")).json()
        assert view["by_state"] == {"cancelled": 1, "waiting": 1}

        rest = (await client.post(f"/batches/{batch}/cancel")).json()
        assert rest["cancelled"] == 1 and rest["jobs"] == {second["job_id"]: "cancelled"}
        view = (await client.get(f"/batches/{batch}")).json()
        assert view["by_state"] == {"cancelled": 2}
        assert (await client.post("/batches/nope/cancel")).status_code == 404

        retried = (await client.post(f"/batches/{batch}/retry", json={})).json()
        assert {d["status"] for d in retried["documents"]} == {"queued"}
        new_ids = {d["job_id"] for d in retried["documents"]}
        assert new_ids.isdisjoint({first["job_id"], second["job_id"]})
        view = (await client.get(f"/batches/{batch}")).json()
        assert view["by_state"] == {"waiting": 2}
        bad = await client.post(f"/batches/{batch}/retry", json={"colour": "red"})
        assert bad.status_code == 422
