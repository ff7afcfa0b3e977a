"""Re-running loses nothing: `pipeline run` interrupted with Ctrl-C and run again ends with
every result file written, and a second run of the demo command (`make demo`) shows every
document complete with its result, paid once. Real Redis, SQLite, `pipeline run` processes,
the real google-genai client against the emulator."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import redis

from tests.scenarios.helpers import CliProcess, batch_id_of, status_json
from tests.support.cli import EXAMPLES
from tests.support.cli import run_cli as cli
from tests.support.emulator import start_emulator

pytestmark = pytest.mark.slow


def _abandoned(env: dict[str, str]) -> int:
    """Ledger rows of calls cut mid-flight (billed perhaps, answer lost): the only repeats."""
    from sqlalchemy import create_engine, text

    engine = create_engine(env["PIPELINE_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(
                "SELECT count(*) FROM llm_calls WHERE outcome = 'abandoned'")).scalar() or 0)
    finally:
        engine.dispose()


def _result_files(env: dict[str, str], batch: str) -> list[Path]:
    return sorted((Path(env["PIPELINE_HOME"]) / "results" / batch).glob("*.json"))


def test_ctrl_c_then_run_again_writes_every_result_and_a_second_demo_shows_them(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    with start_emulator(latency_s=(0.8, 1.2)) as emu:
        # A grace long enough for the call in flight at Ctrl-C to finish on a busy machine:
        # past it, the call is cut, may still be billed, and is paid again by the rerun.
        env = {**pipeline_env, **emu.env, "GOOGLE_API_KEY": "",
               "PIPELINE_SHUTDOWN_GRACE_S": "30"}
        first = CliProcess(env, "run", *EXAMPLES, "--concurrency", "1")
        try:
            first.wait_for(lambda ln: ln.endswith(": complete"), 90, "with a complete document")
            first.proc.send_signal(signal.SIGINT)
            assert first.finish(60) == 130, first.output
        finally:
            first.kill()
        assert "run the same command again to continue" in first.output
        batch1 = batch_id_of(first.output)
        before = status_json(env, batch1)["by_state"]
        assert before.get("complete", 0) < len(EXAMPLES), before  # really interrupted

        second = cli(env, "run", *EXAMPLES, timeout_s=180)
        assert second.returncode == 0, second.stdout + second.stderr
        batch2 = batch_id_of(second.stdout)
        assert batch2 != batch1
        # a rehearsal's dollars are said to be the emulator's, wherever the spend is shown
        shown = cli(env, "status", batch1).stdout
        assert "(emulator calls: priced as Gemini bills them, never billed)" in shown, shown
        assert "no live worker" not in second.stdout  # its own worker is registered first
        files = _result_files(env, batch2)
        assert len(files) == len(EXAMPLES), second.stdout
        data = status_json(env, batch2)
        assert data["by_state"] == {"complete": len(EXAMPLES)}
        for doc in data["documents"]:
            assert doc["result"] is not None
            # Paid by the first batch's runs: not this batch's cost, shown as paid there.
            assert doc["cost_usd"] == "0.000000000", doc
            assert f"paid in batch {batch1[:12]}" in doc["reason"], doc
            assert float(doc["paid_elsewhere_usd"]) > 0, doc  # a program can tell too
        assert status_json(env, batch1)["by_state"] == {"complete": len(EXAMPLES)}
        out = Path(env["PIPELINE_HOME"]) / "exported"
        res = cli(env, "results", batch2, "--out", str(out))
        assert res.returncode == 0 and len(list(out.glob("*.json"))) == len(EXAMPLES), res.stdout
        calls = emu.stats()["generate_requests"]

        # `make demo` a second time: every document complete with its result, nothing paid.
        third = cli(env, "run", *EXAMPLES, timeout_s=180)
        assert third.returncode == 0, third.stdout + third.stderr
        batch3 = batch_id_of(third.stdout)
        assert len(_result_files(env, batch3)) == len(EXAMPLES)
        for f in _result_files(env, batch3):
            assert json.loads(f.read_text())["analysis"]["summary"]
        rows = [ln for ln in third.stdout.splitlines() if ".json" in ln]
        assert sum("complete" in ln for ln in rows) == len(EXAMPLES), third.stdout
        assert emu.stats()["generate_requests"] == calls
        # The batch's own spend is $0, as its cost column says; what the reused results
        # cost where they were paid has a column of its own.
        assert ("total spend: $0.000000000 in this batch ($" in third.stdout
                and "more was paid in earlier batches" in third.stdout), third.stdout
        assert "paid elsewhere USD" in third.stdout
        # Paid twice only for a call cut mid-flight, booked `abandoned` (never at $0).
        assert emu.stats()["billed_repeats"] <= _abandoned(env)
