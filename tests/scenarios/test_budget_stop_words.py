"""A batch whose budget an overrun stopped (the provider billed a call far above its
reservation) says so in every view, with what the overrun calls were billed against what they
reserved, and its refused documents name the command (and the API request) that lifts the
stop with an amount that admits them: a retry alone meets the stop again, so the status
footer names the budget command first. Following the words works. A worker in the test
process, the CLI as subprocesses, the API in process, google-genai against the emulator
(found by a fresh-user trial: the reason said `Budget.raise_limit` and the footer a retry
that left every document over_budget again)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from pipeline.api.dashboard.state import dashboard_state
from pipeline.queue.job import State
from tasks.submission import Upload
from tests.scenarios.helpers import status_json
from tests.support.api import api_client, api_settings
from tests.support.cli import run_cli as cli
from tests.support.emulator import start_emulator
from tests.support.paid_rig import running_pipeline, set_faults
from tests.support.pdfs import make_pdf

pytestmark = pytest.mark.slow


def _doc(marker: str, n: int = 1) -> Upload:
    return Upload(f"{marker.lower()}-{n}.pdf", make_pdf(1, f"{marker} copy {n}. Costs fell."))


async def test_a_batch_stopped_by_an_overrun_says_so_and_names_what_lifts_it(
    pipeline_env: dict[str, str], redis_url: str, key_prefix: str, tmp_path: Path,
) -> None:  # fmt: skip
    limit = Decimal("0.05")
    with start_emulator() as emu:
        set_faults(emu, {"kind": "overbill", "when": "SURPRISE", "tokens": 200_000})
        env = {**pipeline_env, **emu.env, "GOOGLE_API_KEY": ""}
        async with running_pipeline(emu, redis_url, key_prefix, concurrency=1) as rig:
            first = await rig.submit(_doc("SURPRISE"), budget=limit)
            overrun = await rig.finished(first.job_ids[0])
            batch = first.batch_id
            ref = batch[:12]
            later = await rig.submit(_doc("ORDINARY", 1), _doc("ORDINARY", 2), budget=limit,
                                     batch_id=batch)  # fmt: skip
            refused = [await rig.finished(j) for j in later.job_ids]
            data = status_json(env, batch)
            text = cli(env, "status", batch).stdout
            board = await dashboard_state(rig.client, rig.services.engine, rig.services.budget)
            settings = api_settings(tmp_path, redis_url, key_prefix,
                                    env["PIPELINE_DATABASE_URL"])  # fmt: skip
            async with api_client(settings) as (client, _):
                api = (await client.get(f"/batches/{batch}")).json()

            # A retry alone, as the trial did first: said at once to meet the stop, and it does.
            early = cli(env, "retry", ref, "--over-budget", columns=400)
            assert early.returncode == 0, early.stdout + early.stderr
            rerun = sorted(set(re.findall(r"\b[0-9a-f]{32}\b", early.stdout)) - {batch})
            refused_again = [await rig.finished(j) for j in rerun]

            # Follow the footer: the budget command first, then the retry.
            footer = text.splitlines()[-1]
            lift = re.search(r"(pipeline budget \S+ --set \S+); then", footer)
            assert lift, text
            raised = cli(env, *lift.group(1).split()[1:])
            retried = cli(env, "retry", ref, "--over-budget", "--json")
            assert retried.returncode == 0, retried.stdout + retried.stderr
            runs = [d["job_id"] for d in json.loads(retried.stdout)["documents"]]
            again = [await rig.finished(j) for j in runs]
        after = status_json(env, batch)

    assert overrun.state == State.COMPLETE, overrun.error
    assert [j.state for j in refused] == [State.OVER_BUDGET] * 2, [j.error for j in refused]
    stop = data["budget_stop"]
    assert stop is not None and stop["stopped"] is True, data
    assert Decimal(stop["billed_usd"]) > Decimal(stop["reserved_usd"]) > 0, stop
    assert stop["overrun_calls"] == 1 and Decimal(stop["stopped_at_usd"]) == limit, stop
    # Every view says the same: GET /batches/{id}, the dashboard, the status text.
    assert api["budget_stop"] == stop
    (row,) = [b for b in board["batches"] if b["id"] == batch]
    assert row["budget_stop"] == stop
    flat = " ".join(text.split())
    assert "the batch's budget is stopped after an overrun (1 call billed " in flat, text
    assert f"billed ${stop['billed_usd']} against ${stop['reserved_usd']} reserved" in flat
    # The reasons name the real command and request, with an amount above the stop.
    for doc in [d for d in data["documents"] if d["status"] == "over_budget"]:
        reason = doc["reason"]
        assert "raise_limit" not in reason and "Budget." not in reason, reason
        named = re.search(rf"`pipeline budget {ref} --set ([0-9.]+)`", reason)
        assert named and Decimal(named.group(1)) > limit, reason
        assert f'PATCH /batches/{ref} with {{"budget_usd": "{named.group(1)}"}}' in reason
        assert reason.index("pipeline budget") < reason.index("pipeline retry"), reason
    assert "a retry's neither" in " ".join(early.stdout.split()), early.stdout
    assert "until then these runs end over_budget again" in " ".join(early.stdout.split())
    assert len(rerun) == 2 and [j.state for j in refused_again] == [State.OVER_BUDGET] * 2
    # The footer does not offer a retry alone while the stop holds.
    assert footer.startswith(f"first lift the budget's stop: pipeline budget {ref} --set "), text
    assert footer.endswith(f"then retry with fresh calls: pipeline retry {ref} --over-budget")
    assert lift.group(1) == f"pipeline budget {ref} --set {stop['lifts_usd']}"
    assert raised.returncode == 0 and "the stop after an overrun is lifted" in raised.stdout, (
        raised.stdout + raised.stderr)
    assert [j.state for j in again] == [State.COMPLETE] * 2, [j.error for j in again]
    assert after["by_state"] == {"complete": 3} and after["budget_stop"] is None, after
