"""A command that only reads never starts the private Redis a user stopped: after `pipeline
redis stop`, `status`, `results` and `dead list` fail with RedisNotRunning's message (what to
run to start it), the server stays stopped, and `costs` (the ledger alone) still answers.
Real `pipeline` processes, the real embedded redis-server, the offline analyzer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.redis.server import EmbeddedRedis
from tests.support.cli import EXAMPLES, run_cli


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A PIPELINE_HOME whose private Redis (if any was started) is stopped afterwards."""
    path = tmp_path / "home"
    yield path
    EmbeddedRedis(path).stop()


def test_read_only_commands_leave_a_stopped_redis_stopped(home: Path) -> None:
    env = {"PIPELINE_HOME": str(home), "PIPELINE_PROVIDER": "offline",
           "PIPELINE_KEY_PREFIX": "readonly"}  # no PIPELINE_REDIS_URL: the private server
    fresh = run_cli(env, "status")
    assert fresh.returncode == 1
    assert "no private Redis has run under" in fresh.stderr and "pipeline redis start" in (
        fresh.stderr)
    assert not EmbeddedRedis(home).ping(), "a read-only command started the server"

    done = run_cli(env, "run", EXAMPLES[0])  # `run` adds work: it starts the server
    assert done.returncode == 0, done.stdout + done.stderr
    batch = json.loads(run_cli(env, "status", "--json").stdout)["batches"][0]["batch_id"]
    assert run_cli(env, "redis", "stop").returncode == 0
    assert not EmbeddedRedis(home).ping()

    for args in (("status",), ("status", batch), ("results", batch), ("results", batch, "--json"),
                 ("dead", "list")):  # fmt: skip
        r = run_cli(env, *args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert r.stderr.startswith("error: the private Redis under"), (args, r.stderr)
        assert "run `pipeline redis start`" in r.stderr and "Traceback" not in r.stderr
        assert not EmbeddedRedis(home).ping(), f"`pipeline {' '.join(args)}` started Redis"
    costs = run_cli(env, "costs", "--format", "json")
    assert costs.returncode == 0, costs.stderr
    assert json.loads(costs.stdout)["total"]["calls"] >= 1
    assert run_cli(env, "redis", "status").returncode == 1  # still stopped

    assert run_cli(env, "redis", "start").returncode == 0  # what the message says to run
    again = run_cli(env, "results", batch, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)[0]["status"] == "complete"


def test_commands_that_write_start_a_stopped_redis(home: Path) -> None:
    """`cancel`, `budget` and `retry` change jobs, budgets or holds, so like `submit`, `run`
    and `worker` they start the private Redis a user stopped (the README says so)."""
    env = {"PIPELINE_HOME": str(home), "PIPELINE_PROVIDER": "offline",
           "PIPELINE_KEY_PREFIX": "writers"}  # no PIPELINE_REDIS_URL: the private server
    sub = run_cli(env, "submit", EXAMPLES[0], "--json")  # queued: no worker runs here
    assert sub.returncode == 0, sub.stdout + sub.stderr
    batch = json.loads(sub.stdout.splitlines()[0])["batch_id"]
    for args in (("budget", batch, "--set", "5"), ("retry", batch), ("cancel", batch)):
        assert run_cli(env, "redis", "stop").returncode == 0
        assert not EmbeddedRedis(home).ping()
        r = run_cli(env, *args)
        assert "Traceback" not in r.stderr and "RedisNotRunning" not in r.stderr, r.stderr
        assert "pipeline redis start" not in r.stderr, (args, r.stderr)
        assert EmbeddedRedis(home).ping(), f"`pipeline {' '.join(args)}` left Redis stopped"
