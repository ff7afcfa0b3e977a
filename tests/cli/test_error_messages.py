"""Broken input and unreachable services end in one clear line, never a traceback: settings
files, database URLs, Redis, --budget, --log-level, far dates, and a ledger outage while
following a batch. (The API's side of the same errors: tests/api/test_error_responses.py.)"""

from __future__ import annotations

import io
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console

from pipeline.cli.follow import SPEND_UNAVAILABLE, follow
from pipeline.cli.submit import parse_budget
from pipeline.errors import DatabaseUnavailable, InputError, SettingsError
from pipeline.ledger.db import create_ledger_engine
from pipeline.ledger.report import parse_when
from pipeline.queue.client import QueueClient
from pipeline.queue.job import JobOptions
from pipeline.redis.connection import connect_redis
from pipeline.settings import get_settings, load_settings
from tasks.submission import DocOutcome, Submission
from tests.support import ROOT
from tests.support.backends import free_port, redis_refusing
from tests.support.cli import run_cli


def assert_one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    for needle in needles:
        assert needle in r.stderr, r.stderr


# -- settings files -----------------------------------------------------------------------


def test_malformed_pipeline_toml_is_a_settings_error_naming_the_file(clean_env: None) -> None:
    Path("pipeline.toml").write_text("rpm = \n")
    with pytest.raises(SettingsError, match=r"^pipeline\.toml: not valid TOML"):
        load_settings()


def test_bad_json_in_limits_is_a_settings_error_naming_the_variable(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPELINE_LIMITS", "{not json")
    with pytest.raises(SettingsError, match=r"^PIPELINE_LIMITS: not valid JSON") as err:
        load_settings()
    assert "\n" not in str(err.value)


def test_cli_with_a_broken_pipeline_toml_prints_one_line(tmp_path: Path) -> None:
    (tmp_path / "pipeline.toml").write_text("[limits\n")
    r = run_cli({"PIPELINE_HOME": str(tmp_path / "home")}, "costs", cwd=tmp_path, columns=80)
    assert_one_line_error(r, "pipeline.toml: not valid TOML")


# -- database URLs, unreachable Redis and database ----------------------------------------


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("this is not a url", SettingsError),
        ("postgress://user@localhost/db", SettingsError),  # a typo in the scheme
    ],
)
def test_bad_database_url_names_the_variable(url: str, error: type[Exception]) -> None:
    with pytest.raises(error, match="PIPELINE_DATABASE_URL"):
        create_ledger_engine(url)


def test_unreachable_database_is_database_unavailable() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    with pytest.raises(DatabaseUnavailable, match="PIPELINE_DATABASE_URL"):
        create_ledger_engine(url)


def test_cli_redis_error_is_one_line(tmp_path: Path, redis_url: str) -> None:
    url = redis_refusing(redis_url, "hunter2")
    r = run_cli({"PIPELINE_HOME": str(tmp_path), "PIPELINE_REDIS_URL": url}, "status",
                columns=80)  # fmt: skip
    assert_one_line_error(r, "Redis at redis://:***@", "refused", "PIPELINE_REDIS_URL")
    assert "hunter2" not in r.stderr  # the password is not printed
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_cli_bad_database_url_is_one_line(tmp_path: Path) -> None:
    env = {"PIPELINE_HOME": str(tmp_path), "PIPELINE_DATABASE_URL": "postgress://x@y/z"}
    r = run_cli(env, "costs", columns=80)
    assert_one_line_error(r, "PIPELINE_DATABASE_URL")


# -- --budget -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-Infinity", "0", "0.00", "-1", "$-2"])
def test_budget_must_be_finite_and_positive(value: str) -> None:
    with pytest.raises(InputError, match="positive amount"):
        parse_budget(value)


def test_good_budget_is_kept_exactly() -> None:
    assert parse_budget("$2.50") == Decimal("2.50")


def test_cli_budget_nan_is_one_line(pipeline_env: dict[str, str]) -> None:
    pdf = str(ROOT / "tests" / "fixtures")  # never read: the budget is checked first
    r = run_cli(pipeline_env, "submit", pdf, "--budget", "nan", columns=80)
    assert_one_line_error(r, "--budget 'nan' must be a positive amount")


# -- --log-level and far dates -----------------------------------------------------------


@pytest.mark.parametrize("command", ["worker", "serve"])
def test_bogus_log_level_is_a_usage_error(tmp_path: Path, command: str) -> None:
    r = run_cli({"PIPELINE_HOME": str(tmp_path)}, command, "--log-level", "bogus", columns=80)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "bogus" in r.stderr


def test_end_of_calendar_is_an_input_error_not_overflow() -> None:
    with pytest.raises(InputError, match="too late"):
        parse_when("9999-12-31", end=True)
    assert parse_when("9999-12-30", end=True).year == 9999


# -- a ledger outage while following a batch -----------------------------------------------


async def test_follow_survives_a_ledger_outage(
    pipeline_env: dict[str, str], redis_url: str
) -> None:
    dead_db = create_ledger_engine(
        f"postgresql://postgres@127.0.0.1:{free_port()}/test", upgrade=False
    )
    client = QueueClient(connect_redis(redis_url), settings=get_settings())
    try:
        since = await client.last_event_id()
        handle = await client.enqueue("never_runs", _options=JobOptions(queue="default"))
        await client.cancel(handle.id)  # terminal at once: nothing is running it
        sub = Submission("b1", [DocOutcome("a.pdf", "queued", handle.id, "doc-a")])
        out = io.StringIO()
        tracker = await follow(client, sub.batch_id, since, Console(file=out, width=200),
                               engine=dead_db, documents=[("a.pdf", "doc-a", handle.id)],
                               probe=False)  # fmt: skip
    finally:
        await client.aclose()
        dead_db.dispose()
    assert tracker.finished
    assert SPEND_UNAVAILABLE in out.getvalue(), out.getvalue()
