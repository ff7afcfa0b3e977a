"""A document a worker refused for its batch budget says so in the user's words: the batch
by the short id `pipeline budget` takes, the worker's bound equal to the dry run's figure,
and the real command, which then works. Real Redis, SQLite, a `pipeline worker` process,
the real google-genai client against the emulator."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redis

from pipeline.ledger.budget import NANOS
from pipeline.llm.pricing import PriceTable
from pipeline.money import dollars, format_usd
from pipeline.redis.keys import Keys
from pipeline.settings import load_settings
from tasks.plan import least_call_usd
from tests.scenarios.helpers import analysis_worker, status_json
from tests.support.cli import EXAMPLES
from tests.support.cli import run_cli as cli
from tests.support.emulator import start_emulator
from tests.support.waiting import until

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


def _reserved_usd(sredis: redis.Redis, env: dict[str, str], batch: str) -> Decimal:
    """What the batch's budget holds for calls in flight now (USD)."""
    totals = Keys(env["PIPELINE_KEY_PREFIX"]).budget(f"batch:{batch}")
    return Decimal(int(sredis.hget(totals, "reserved") or 0)) / NANOS


def test_the_amount_an_over_budget_reason_names_admits_the_call_beside_a_call_in_flight(
    pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis
) -> None:
    """The user's case: a cheap document's call is in flight (held, then paid) when the
    batch budget refuses a dearer one outright. The `--set` amount the refusal names must
    admit that call beside what the first one holds and then spends: applied, the retry
    completes. A budget set lower is accepted and says it is still too low, with the
    amount that would not be."""
    # Every answer takes 4 s, so the first document's call is still held when the second
    # one is refused (countTokens is not slowed).
    with start_emulator(latency_s=(4.0, 4.0)) as emu:
        env = {**pipeline_env, **emu.env, "GOOGLE_API_KEY": ""}
        dry = cli(env, "submit", *EXAMPLES, "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        single = sorted((Decimal(d["worst_case_usd"]), d["name"], path)
                        for d, path in zip(json.loads(dry.stdout)["documents"], EXAMPLES,
                                           strict=True) if d["calls"] == 1)  # fmt: skip
        (cheap, _, first), (dear, dear_name, second) = single[0], single[-1]
        assert cheap < dear, single
        limit = cheap + (dear - cheap) / 2  # admits the cheap call, refuses the dear one
        sub = cli(env, "submit", first, second, "--budget", str(limit), "--json")
        assert sub.returncode == 0, sub.stdout + sub.stderr
        batch = json.loads(sub.stdout)["batch_id"]
        # One slot: this worker takes the first document (the queue keeps submit order)...
        paying = analysis_worker(redis_url, env, "--concurrency", "1")
        workers = [paying]
        try:
            until(lambda: _reserved_usd(sredis, env, batch) > 0, 60, "the first call held")
            # ...and, while its call is held, another takes the second.
            workers.append(analysis_worker(redis_url, env, "--concurrency", "1"))
            until(lambda: status_json(env, batch)["by_state"] == {"complete": 1,
                                                                  "over_budget": 1},
                  120, "one document complete, the other over budget")  # fmt: skip
            [row] = [d for d in status_json(env, batch)["documents"]
                     if d["status"] == "over_budget"]  # fmt: skip
            assert row["name"] == dear_name, row
            reason = row["reason"]
            assert f"{dollars(dear)} worst case" in reason, reason
            command = re.search(r"`(pipeline budget [^`]+)`", reason)
            assert command, reason
            advised = Decimal(command.group(1).split("--set ")[1])
            spent = Decimal(status_json(env, batch)["spend_usd"])
            assert spent > 0
            assert advised >= spent + dear, (advised, spent, dear, reason)

            # A budget below what the document needs is taken, and says what would do.
            low = cli(env, "budget", batch[:12], "--set", str(limit), "--json")
            assert low.returncode == 0, low.stderr
            said = json.loads(low.stdout)
            [short] = said["short"]
            assert short["name"] == dear_name and Decimal(short["call_usd"]) == dear, said
            assert Decimal(said["used_usd"]) == spent, said  # nothing is in flight now
            assert Decimal(said["admits_usd"]) == spent + dear, said
            words = cli(env, "budget", batch[:12], "--set", str(limit))
            assert "still too low for 1 over-budget document" in words.stdout, words.stdout
            assert f"--set {format_usd(spent + dear)}` admits it" in words.stdout, words.stdout

            # One below a call is refused, and the least it names admits one beside the spend.
            least = least_call_usd(PriceTable.load(), load_settings().model, datetime.now(UTC))
            tiny = cli(env, "budget", batch[:12], "--set", str(least / 2))
            assert tiny.returncode == 1, tiny.stdout
            assert f"Give at least {dollars(spent + least)} " in " ".join(tiny.stderr.split())

            # The amount the reason named, applied: the retry completes the document.
            raised = cli(env, *command.group(1).split()[1:], "--json")
            assert raised.returncode == 0, raised.stderr
            assert json.loads(raised.stdout)["short"] == []
            again = cli(env, "retry", batch[:12], "--over-budget", "--wait", "--json")
            assert again.returncode == 0, again.stdout + again.stderr + workers[-1].output()
        finally:
            for worker in workers:
                worker.close()
    assert status_json(env, batch)["by_state"] == {"complete": 2}
