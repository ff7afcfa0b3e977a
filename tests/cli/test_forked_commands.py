"""The suite's `pipeline` commands are forked from a server that has imported the CLI
(tests/support/forkserver.py): each must still behave as a fresh `python -m pipeline`,
with its own environment, working directory, output streams, exit status and signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.cli import cli_env, run_cli
from tests.support.forkserver import ForkServer

pytestmark = pytest.mark.skipif(
    os.environ.get("PIPELINE_TEST_FORKSERVER") == "0", reason="the fork server is turned off"
)


def _fresh(env: dict[str, str], *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=cli_env(env),
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_a_forked_command_answers_as_a_fresh_one(tmp_path: Path) -> None:
    """Same stdout, stderr and exit status as `python -m pipeline`, for a success, a usage
    error and a settings error read from the environment and from ./pipeline.toml."""
    (tmp_path / "pipeline.toml").write_text("rmp = 5\n")  # an unknown key: refused
    home = {"PIPELINE_HOME": str(tmp_path / "home")}
    cases: list[tuple[dict[str, str], tuple[str, ...], Path]] = [
        ({}, ("--version",), ROOT),
        ({}, ("no-such-command",), ROOT),
        ({**home, "PIPELINE_KEY_PREFIX": "has space"}, ("costs",), ROOT),
        (home, ("costs",), tmp_path),
    ]
    for env, args, cwd in cases:
        forked, fresh = run_cli(env, *args, cwd=cwd), _fresh(env, *args, cwd=cwd)
        assert (forked.returncode, forked.stdout, forked.stderr) == (
            fresh.returncode, fresh.stdout, fresh.stderr
        ), args
    assert "pipeline.toml" in fresh.stderr and fresh.returncode == 1


def test_commands_forked_at_once_keep_their_own_environments(tmp_path: Path) -> None:
    prefixes = [f"ok{n}" if n % 2 else f"bad prefix {n}" for n in range(6)]

    def one(prefix: str) -> subprocess.CompletedProcess[str]:
        env = {"PIPELINE_HOME": str(tmp_path / "h"), "PIPELINE_KEY_PREFIX": prefix,
               "PIPELINE_DATABASE_URL": f"sqlite:///{tmp_path / 'l.db'}"}  # fmt: skip
        return run_cli(env, "costs", "--json")

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(one, prefixes))
    for prefix, answer in zip(prefixes, answers, strict=True):
        assert (answer.returncode == 0) == (" " not in prefix), (prefix, answer.stderr)
        if " " in prefix:
            assert "PIPELINE_KEY_PREFIX" in answer.stderr


def test_a_forked_process_reports_its_signal_and_its_exit_code(tmp_path: Path) -> None:
    server = ForkServer.get(ROOT, "worker")
    assert server is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env.update({"PYTHONPATH": str(ROOT), "PIPELINE_HOME": str(tmp_path)})
    with open(os.devnull, "rb") as null, open(tmp_path / "err", "w+") as err:
        stdio = (null.fileno(), err.fileno(), err.fileno())
        sleeper = server.spawn(["emulator", "--port", "0"], env, str(ROOT), stdio)
        assert sleeper.poll() is None
        with pytest.raises(subprocess.TimeoutExpired):
            sleeper.wait(0.2)
        sleeper.send_signal(signal.SIGKILL)
        assert sleeper.wait(30) == -signal.SIGKILL
        usage = server.spawn(["no-such-command"], env, str(ROOT), stdio)
        code = usage.wait(60)
        err.seek(0)
        said = err.read()
    assert code == 2, said
    assert "No such command 'no-such-command'" in said
