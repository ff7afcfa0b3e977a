"""What a stopped `pipeline run` says is what happened. Ctrl-C as a terminal sends it: SIGINT
to the whole process group (the run and its PDF pool processes). Real `pipeline run`
processes, real Redis, SQLite, the real google-genai client against the emulator, and the
offline analyzer.

- Twice: the calls in flight are cut off, booked `abandoned` at their worst case, and paid
  again by a rerun: the last line says so, with the ledger's count and amount, and does not
  say "nothing is paid twice". Said for who answered (the ledger row's `provider`): Gemini's
  may have been billed (PIPELINE_PROVIDER=gemini, here pointed at the emulator), the
  emulator's are a rehearsal's (priced, never billed), the offline analyzer's cost nothing
  and nothing is paid again.
- Run again: the documents whose jobs went back to the queue are said to be queued (run
  once), with their calls cut off paid again when they run; "not paid again" only once the
  run has its result.
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


def _started(env: dict[str, str]) -> int:
    """The ledger's calls in flight: `started` rows, written before a request goes out (0
    while the run has not made its ledger yet)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    engine = create_engine(env["PIPELINE_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(
                "SELECT count(*) FROM llm_calls WHERE outcome = 'started'")).scalar() or 0)
    except OperationalError:  # no table yet
        return 0
    finally:
        engine.dispose()


def _long_pdfs(where: Path, n: int, pages: int = 300) -> list[str]:
    """`n` PDFs of `pages` text pages, each its own content: the offline analyzer takes
    seconds over each, so its calls are still in flight when the run is stopped."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=8)
    line = "The customer Acme GmbH owes EUR 1,234.56 for services rendered in March."
    for page in range(pages):
        pdf.add_page()
        for row in range(40):
            pdf.text(10, 10 + row * 6, f"Invoice {page}.{row} {line}")
    data = bytes(pdf.output())
    paths = []
    for i in range(n):
        path = where / f"long{i}.pdf"
        path.write_bytes(data + f"%copy {i}\n".encode())  # after %%EOF: a new hash, same text
        paths.append(str(path))
    return paths


def _ctrl_c_twice(run: Terminal) -> None:
    """Ctrl-C, and again once the run says it is stopping (the second cuts off its calls)."""
    run.ctrl_c()
    run.until("stopping", lambda: any("stopping:" in ln for ln in run.err))
    run.ctrl_c()


def _stopped_mid_calls(env: dict[str, str], emu: RunningEmulator, calls: int,
                       *args: str) -> Terminal:  # fmt: skip
    """`pipeline run ARGS`, stopped by two Ctrl-C once `calls` calls are in flight; ended."""
    run = Terminal(env, "run", *args)
    try:
        run.until(f"{calls} calls in flight", lambda: emu.stats()["in_flight"] >= calls)
        _ctrl_c_twice(run)
        assert run.finish() == 130, run.text
    finally:
        run.kill()
    return run


def _env(pipeline_env: dict[str, str], emu: RunningEmulator, **more: str) -> dict[str, str]:
    return {**pipeline_env, **emu.env, "GOOGLE_API_KEY": "", **more}


def test_two_ctrl_c_say_the_calls_cut_off_are_paid_again(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    with start_emulator(latency_s=(4.0, 4.0)) as emu:
        run = _stopped_mid_calls(_env(pipeline_env, emu), emu, 2, *EXAMPLES, "--budget", "1",
                                 "--label", "cc2")  # fmt: skip
    calls, booked = _abandoned(pipeline_env)
    assert calls >= 2, run.text  # what the ledger says was cut off
    last = run.out[-1]
    word = "call" if calls == 1 else "calls"
    assert f"{calls} {word} in flight" in last, run.text
    assert dollars(booked) in last and "running again pays for" in last, run.text
    # the emulator's: a rehearsal, priced and never billed
    assert "the emulator's, a rehearsal (priced as Gemini bills, never billed)" in last, last
    assert "in the rehearsal's dollars" in last and "may have been billed" not in last, last
    assert "nothing is paid twice" not in run.text, run.text
    assert "Traceback" not in run.text, run.text


def test_two_ctrl_c_on_gemini_say_the_calls_cut_off_may_have_been_billed(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    """PIPELINE_PROVIDER=gemini (the emulator standing in for Google's endpoint): the ledger
    rows say "gemini", and only those are said to be possibly billed."""
    with start_emulator(latency_s=(4.0, 4.0)) as emu:
        run = _stopped_mid_calls(_env(pipeline_env, emu, PIPELINE_PROVIDER="gemini"), emu, 2,
                                 *SMALL)  # fmt: skip
    calls, booked = _abandoned(pipeline_env)
    assert calls >= 2, run.text
    last = run.out[-1]
    assert (f"{calls} calls in flight were cut off: they may have been billed, are booked at "
            f"their worst case ({dollars(booked)}), and running again pays for them again"
            in last), run.text  # fmt: skip
    assert "rehearsal" not in last and "nothing is paid twice" not in run.text, run.text


def test_two_ctrl_c_offline_say_the_calls_cut_off_cost_nothing_and_a_rerun_runs_them_once(
    pipeline_env: dict[str, str], sredis: redis.Redis, tmp_path: Path
) -> None:
    """The offline analyzer reaches no provider: its calls cut off were never billed, and
    sending them again costs nothing."""
    from tests.support.cli import run_cli

    docs = _long_pdfs(tmp_path, 2)
    run = Terminal(pipeline_env, "run", *docs, "--label", "off")
    try:
        run.until("2 calls in flight", lambda: _started(pipeline_env) >= 2, timeout_s=120)
        _ctrl_c_twice(run)
        assert run.finish() == 130, run.text
    finally:
        run.kill()
    calls, booked = _abandoned(pipeline_env)
    assert calls == 2 and booked == 0, run.text
    last = run.out[-1]
    assert ("2 calls in flight were cut off: they are the offline analyzer's (no provider "
            "asked), so they cost nothing and nothing is paid again" in last), run.text
    assert "may have been billed" not in last and "pays for" not in last, run.text
    assert "run the same command again to continue (nothing is paid twice)" in last, run.text

    # the same command again: the released jobs answer for it, once
    again = run_cli(pipeline_env, "run", *docs, "--label", "off", columns=1000, timeout_s=240)
    assert again.returncode == 0, again.stdout + again.stderr
    rows = [ln for ln in again.stdout.splitlines() if "duplicate" in ln]
    assert len(rows) == 2, again.stdout
    for row in rows:
        assert "queued: it runs once, not twice" in row, row
        assert ("1 call of it was cut off in flight: it is the offline analyzer's (no provider "
                "asked), so it costs nothing and nothing is paid again when it runs" in row), row
        assert "not paid again" not in row, row


def test_run_again_after_two_ctrl_c_says_the_jobs_are_queued_and_their_cut_calls_paid_again(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    """A stopped run's jobs went back to the queue without a result: a rerun finds them as
    duplicates, which run once, and whose calls cut off are sent (and priced) again; "not
    paid again" only once their results are stored."""
    from tests.support.cli import run_cli

    with start_emulator(latency_s=(4.0, 4.0)) as emu:
        env = _env(pipeline_env, emu)
        run = _stopped_mid_calls(env, emu, len(SMALL), *SMALL)
        assert _abandoned(env)[0] == len(SMALL), run.text

        again = run_cli(env, "run", *SMALL, columns=1000, timeout_s=180)
        assert again.returncode == 0, again.stdout + again.stderr
        rows = [ln for ln in again.stdout.splitlines() if "duplicate" in ln]
        assert len(rows) == len(SMALL), again.stdout
        for row in rows:
            assert "queued: it runs once, not twice" in row, row
            assert "1 call of it was cut off in flight: it is the emulator's" in row, row
            assert "is paid again in the rehearsal's dollars when it runs" in row, row
            assert "not paid again" not in row, row

        third = run_cli(env, "run", *SMALL, columns=1000, timeout_s=180)
        assert third.returncode == 0, third.stdout + third.stderr
        rows = [ln for ln in third.stdout.splitlines() if "duplicate" in ln]
        assert len(rows) == len(SMALL), third.stdout
        assert all("which has its result: not paid again" in row for row in rows), third.stdout


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
    assert "a rehearsal" in said[-1] and "may have been billed" not in said[-1], worker.text
    assert "Traceback" not in worker.text, worker.text
