"""A document a worker refused for its batch budget says so in the user's words: the batch
by the short id `pipeline budget` takes, the worker's bound equal to the dry run's figure,
and the real command, which then works. Real Redis, SQLite, a `pipeline worker` process,
the real google-genai client against the emulator."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest
import redis

from pipeline.money import dollars
from tests.scenarios.helpers import analysis_worker, status_json
from tests.support.cli import EXAMPLES
from tests.support.cli import run_cli as cli
from tests.support.emulator import start_emulator

pytestmark = pytest.mark.slow


def test_an_over_budget_reason_names_the_batch_and_the_command_that_lifts_it(
    pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis
) -> None:
    doc = EXAMPLES[0]
    with start_emulator() as emu:
        env = {**pipeline_env, **emu.env, "GOOGLE_API_KEY": ""}
        dry = cli(env, "submit", doc, "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        [est] = json.loads(dry.stdout)["documents"]
        worst = Decimal(est["worst_case_usd"])
        worker = analysis_worker(redis_url, env)
        try:
            sub = cli(env, "submit", doc, "--budget", str(worst - Decimal("0.00001")),
                      "--wait", "--json")  # fmt: skip
            assert sub.returncode == 1, sub.stdout + sub.stderr + worker.output()
            batch = json.loads(sub.stdout.splitlines()[0])["batch_id"]
            [row] = status_json(env, batch)["documents"]
            reason = row["reason"]
            assert row["status"] == "over_budget", row
            assert "batch:" not in reason and "BATCH" not in reason and " USD" not in reason
            assert f"the budget of batch {batch[:12]}" in reason, reason
            assert f"{dollars(worst)} worst case" in reason, reason  # the dry run's figure
            command = re.search(r"`(pipeline budget [^`]+)`", reason)
            retry = re.search(r"`(pipeline retry [^`]+)`", reason)
            assert command and retry, reason
            assert command.group(1) == f"pipeline budget {batch[:12]} --set {worst}"
            raised = cli(env, *command.group(1).split()[1:])
            assert raised.returncode == 0, raised.stderr
            again = cli(env, *retry.group(1).split()[1:], "--wait", "--json")
            assert again.returncode == 0, again.stdout + again.stderr + worker.output()
        finally:
            worker.close()
    assert status_json(env, batch)["by_state"] == {"complete": 1}
