"""What a stopped `pipeline run` says is what happened. Ctrl-C as a terminal sends it: SIGINT
to the whole process group (the run and its PDF pool processes). Real `pipeline run`
processes, real Redis, SQLite, the real google-genai client against the emulator.

- Twice: the calls in flight are cut off, booked `abandoned` at their worst case, and paid
  again by a rerun: the last line says so, with the ledger's count and amount, and does not
  say "nothing is paid twice".
- Once, every job finishing in the grace period: the last line says all are done and there
  is nothing to run again.
- No traceback from the pool processes (which the terminal's SIGINT reaches too).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from pipeline.money import dollars
from tests.scenarios.helpers import start_pipeline
from tests.support import ROOT
from tests.support.cli import EXAMPLES
from tests.support.emulator import RunningEmulator, start_emulator

pytestmark = pytest.mark.slow

SMALL = [str(ROOT / "examples" / "docs" / n)
         for n in ("invoice.pdf", "letter_de.pdf", "account_statement.pdf")]  # fmt: skip


class Terminal:
    """`python -m pipeline ARGS` in a session of its own, as a shell runs it in the
    foreground: `ctrl_c()` signals its whole process group. stdout and stderr are gathered
    apart, line by line."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = start_pipeline(env, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True)  # fmt: skip
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(s, into), daemon=True)
                         for s, into in ((self.proc.stdout, self.out),
                                         (self.proc.stderr, self.err))]  # fmt: skip
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(stream: object, into: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            into.append(line.rstrip("\n"))

    def ctrl_c(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)

    def until(self, what: str, check: Callable[[], bool], timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if self.proc.poll() is not None:
                raise AssertionError(f"exited before {what}:\n{self.text}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not {what} within {timeout_s}s:\n{self.text}")
            time.sleep(0.02)

    def children(self) -> list[int]:
        pids: list[int] = []
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*"):
            try:
                pids += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                continue
        return pids

    def finish(self, timeout_s: float = 90) -> int:
        code = self.proc.wait(timeout_s)
        for t in self._readers:
            t.join(10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    @property
    def text(self) -> str:
        return "\n".join(self.out) + "\n--- stderr ---\n" + "\n".join(self.err)


def _abandoned(env: dict[str, str]) -> tuple[int, Decimal]:
    """The ledger's abandoned calls: how many, and their booked cost."""
    from sqlalchemy import create_engine, text

    engine = create_engine(env["PIPELINE_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT cost_usd FROM llm_calls WHERE outcome = 'abandoned'")).all()  # fmt: skip
    finally:
        engine.dispose()
    return len(rows), sum((Decimal(str(r[0])).quantize(Decimal("1e-9")) for r in rows), Decimal(0))


def _env(pipeline_env: dict[str, str], emu: RunningEmulator, **more: str) -> dict[str, str]:
    return {**pipeline_env, **emu.env, "GOOGLE_API_KEY": "", **more}


def test_two_ctrl_c_say_the_calls_cut_off_are_paid_again(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    with start_emulator(latency_s=(4.0, 4.0)) as emu:
        run = Terminal(_env(pipeline_env, emu), "run", *EXAMPLES, "--budget", "1",
                       "--label", "cc2")  # fmt: skip
        try:
            run.until("2 calls in flight", lambda: emu.stats()["in_flight"] >= 2)
            run.ctrl_c()
            run.until("stopping", lambda: any("stopping:" in ln for ln in run.err))
            run.ctrl_c()
            assert run.finish() == 130, run.text
        finally:
            run.kill()
    calls, booked = _abandoned(pipeline_env)
    assert calls >= 2, run.text  # what the ledger says was cut off
    last = run.out[-1]
    word = "call" if calls == 1 else "calls"
    assert f"{calls} {word} in flight" in last, run.text
    assert dollars(booked) in last and "running again pays for" in last, run.text
    assert "nothing is paid twice" not in run.text, run.text
    assert "Traceback" not in run.text, run.text


def test_one_ctrl_c_after_every_job_ended_writes_the_results_and_says_nothing_to_run_again(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    with start_emulator(latency_s=(1.5, 1.5)) as emu:
        run = Terminal(_env(pipeline_env, emu, PIPELINE_SHUTDOWN_GRACE_S="60"), "run", *SMALL)
        try:
            run.until("every call in flight", lambda: emu.stats()["in_flight"] >= len(SMALL))
            run.ctrl_c()
            assert run.finish() == 130, run.text
        finally:
            run.kill()
    last = run.out[-1]
    assert last.startswith(f"stopped: all {len(SMALL)} documents done"), run.text
    assert "nothing went back to the queue" in last and "nothing to run again" in last, run.text
    assert "run the same command again" not in run.text, run.text
    assert _abandoned(pipeline_env)[0] == 0
    # every document ended in the grace period: its results are written as after a whole run
    written = list((Path(pipeline_env["PIPELINE_HOME"]) / "results").glob("*/*.json"))
    assert len(written) == len(SMALL), (written, run.text)


def test_ctrl_c_to_the_process_group_prints_no_traceback_from_the_pool(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    with start_emulator(latency_s=(3.0, 3.0)) as emu:
        run = Terminal(_env(pipeline_env, emu), "run", SMALL[0])
        try:
            # the pool process has parsed the PDF and waits for more work when the call is out
            run.until("a pool process and a call in flight",
                      lambda: bool(run.children()) and emu.stats()["in_flight"] >= 1)  # fmt: skip
            pool = run.children()
            run.ctrl_c()
            code = run.finish()
        finally:
            run.kill()
    assert "Traceback" not in run.text and "KeyboardInterrupt" not in run.text, run.text
    assert code == 130, run.text
    for pid in pool:  # the parent ended them
        assert not Path(f"/proc/{pid}").exists() or "Z" in _state(pid), pid


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def test_a_worker_stopped_twice_says_the_calls_it_cut_off_are_paid_again(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    from tests.support.cli import run_cli

    with start_emulator(latency_s=(4.0, 4.0)) as emu:
        env = _env(pipeline_env, emu)
        sent = run_cli(env, "submit", *SMALL)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        worker = Terminal(env, "worker")
        try:
            worker.until("2 calls in flight", lambda: emu.stats()["in_flight"] >= 2)
            worker.ctrl_c()
            worker.until("stopping", lambda: any("stopping:" in ln for ln in worker.err))
            worker.ctrl_c()
            worker.finish()
        finally:
            worker.kill()
    calls, booked = _abandoned(pipeline_env)
    assert calls >= 2, worker.text
    said = [ln for ln in worker.err if "in flight" in ln and "cut off" in ln]
    assert said and f"{calls} calls in flight were cut off" in said[-1], worker.text
    assert dollars(booked) in said[-1] and "running again pays for" in said[-1], worker.text
    assert "Traceback" not in worker.text, worker.text
