"""A budget that cannot pay for one call is refused at submit, nothing queued; one that
can, but not for these documents, queues them with a warning. Over-budget documents can
be finished: resubmitted in a new batch they run under its budget, and `pipeline budget
BATCH --set` + `pipeline retry BATCH --over-budget` finishes the rest with fresh calls under
the raised budget. Real Redis, SQLite, a `pipeline worker` process, the real google-genai
client against the emulator."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redis
from sqlalchemy import create_engine, select

from pipeline.ledger.models import LLMCall
from pipeline.llm.pricing import PriceTable
from pipeline.redis.keys import Keys
from pipeline.settings import load_settings
from tasks.plan import least_call_usd
from tests.scenarios.helpers import analysis_worker, status_json
from tests.support.cli import EXAMPLES
from tests.support.cli import run_cli as cli
from tests.support.emulator import start_emulator

pytestmark = pytest.mark.slow


def _call_batches(env: dict[str, str], document_id: str) -> set[str | None]:
    engine = create_engine(env["PIPELINE_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return set(conn.scalars(select(LLMCall.batch_id).where(
                LLMCall.document_id == document_id, LLMCall.outcome == "ok")))  # fmt: skip
    finally:
        engine.dispose()


def test_over_budget_documents_finish_after_budget_set_and_retry(
    pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis
) -> None:
    with start_emulator() as emu:
        env = {**pipeline_env, **emu.env, "GOOGLE_API_KEY": ""}
        worker = analysis_worker(redis_url, env, "--concurrency", "4")
        try:
            refused = cli(env, "submit", *EXAMPLES, "--budget", "0.000001", "--json")
            assert refused.returncode != 0 and "Traceback" not in refused.stderr
            assert "cannot pay for one call" in refused.stderr and "nothing was queued" in (
                refused.stderr), refused.stderr
            assert not sredis.keys(Keys(env["PIPELINE_KEY_PREFIX"]).job("*"))  # nothing queued
            # Above what one call reserves with no input, below what any of these can cost.
            floor = least_call_usd(PriceTable.load(), load_settings().model, datetime.now(UTC))
            small = str(floor + Decimal("0.0001"))
            sub = cli(env, "submit", *EXAMPLES, "--budget", small, "--wait", "--json")
            assert sub.returncode == 1, sub.stdout + sub.stderr + worker.output()
            submitted = json.loads(sub.stdout.splitlines()[0])
            batch = submitted["batch_id"]
            [warning] = submitted["warnings"]
            assert f"{len(EXAMPLES)} documents will end over budget" in warning
            assert f"pipeline budget {batch[:12]} --set " in warning
            data = status_json(env, batch)
            assert data["by_state"] == {"over_budget": len(EXAMPLES)}, data
            reason = data["documents"][0]["reason"]
            assert f"pipeline budget {batch[:12]} --set " in reason, reason
            assert f"pipeline retry {batch[:12]} --over-budget" in reason, reason
            # and the same two doors for a user of the HTTP API alone
            assert f"PATCH /batches/{batch[:12]} with" in reason, reason
            assert (f'POST /batches/{batch[:12]}/retry with {{"over_budget": true}}'
                    in reason), reason  # fmt: skip
            assert emu.stats()["generate_requests"] == 0  # refused before anything was sent

            # The first document sent again in a new batch: a new run, under that budget.
            again = cli(env, "submit", EXAMPLES[0], "--budget", "5", "--wait", "--json")
            assert again.returncode == 0, again.stdout + again.stderr
            redo = json.loads(again.stdout.splitlines()[0])
            assert redo["documents"][0]["status"] == "queued"
            doc0 = redo["documents"][0]["document_id"]
            assert _call_batches(env, doc0) == {redo["batch_id"]}

            raised = cli(env, "budget", batch[:12], "--set", "5")
            assert raised.returncode == 0, raised.stderr
            assert "budget $5" in raised.stdout and "--over-budget" in raised.stdout
            before = emu.stats()["generate_requests"]
            retry = cli(env, "retry", batch[:12], "--over-budget", "--wait", "--json")
            assert retry.returncode == 0, retry.stdout + retry.stderr + worker.output()
            retried = json.loads(retry.stdout.splitlines()[0])["documents"]
            # The first document has its result already (from the new batch): not retried.
            assert sorted(r["name"] for r in retried) == sorted(EXAMPLES[1:])
            assert {r["status"] for r in retried} == {"queued"}
        finally:
            worker.close()
        assert emu.stats()["generate_requests"] >= before + len(EXAMPLES) - 1  # fresh calls
        assert emu.stats()["billed_repeats"] == 0

    data = status_json(env, batch)
    assert data["by_state"] == {"complete": len(EXAMPLES)}, data
    assert data["budget_usd"].startswith("5")
    assert Decimal(data["spend_usd"]) > 0 and Decimal(data["spend_usd"]) <= 5
    assert all(d["result"] is not None for d in data["documents"])
    for d in data["documents"][1:]:
        assert _call_batches(env, d["document_id"]) == {batch}
    nothing = cli(env, "retry", batch, "--over-budget")
    assert nothing.returncode == 1 and "nothing to retry" in nothing.stdout
