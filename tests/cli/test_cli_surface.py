"""The command line's small promises: --version, flags shown as flags, --since after --until
refused, a batch named wrongly told so in one line, and output that is not a terminal never
cuts a name or a reason. Real subprocesses, Redis and SQLite."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import redis

from tests.support.cli import EXAMPLES
from tests.support.cli import run_cli as cli


def test_version_and_flags_without_a_value_column(pipeline_env: dict[str, str]) -> None:
    v = cli(pipeline_env, "--version")
    assert v.returncode == 0 and v.stdout.startswith("pipeline ")
    for command in ("submit", "worker", "retry", "status"):
        h = cli(pipeline_env, command, "--help")
        assert h.returncode == 0, h.stderr
        assert "<bool>" not in h.stdout, h.stdout
    worker = cli(pipeline_env, "worker", "--help").stdout
    assert "--burst" in worker and "--no-burst" not in worker
    assert "--log-format" in worker


def test_since_after_until_is_refused(pipeline_env: dict[str, str]) -> None:
    r = cli(pipeline_env, "costs", "--since", "2026-03-02", "--until", "2026-03-01")
    assert r.returncode == 2 and "--since" in r.stderr and "Traceback" not in r.stderr
    same_day = cli(pipeline_env, "costs", "--since", "2026-03-01", "--until", "2026-03-01")
    assert same_day.returncode == 0, same_day.stderr


def test_unknown_or_ambiguous_batches_are_one_line_errors(
    pipeline_env: dict[str, str], sredis: redis.Redis
) -> None:
    r = cli(pipeline_env, "status", "no-such-batch")
    assert r.returncode == 1 and "no batch 'no-such-batch'" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    for command in (("retry", "nope"), ("budget", "nope", "--set", "1"), ("results", "nope")):
        r = cli(pipeline_env, *command)
        assert r.returncode == 1 and "no batch 'nope'" in r.stderr, (command, r.stderr)
    cancel = cli(pipeline_env, "cancel", "nope")  # a batch or a job: the message names both
    assert cancel.returncode == 1 and "no batch and no job 'nope'" in cancel.stderr, cancel.stderr
    assert "Traceback" not in cancel.stderr and len(cancel.stderr.strip().splitlines()) == 1
    bad = cli(pipeline_env, "budget", "nope", "--set", "-3")
    assert bad.returncode == 1 and "positive amount" in bad.stderr


def test_output_that_is_not_a_terminal_keeps_names_and_reasons_whole(
    pipeline_env: dict[str, str], sredis: redis.Redis, tmp_path: Path
) -> None:
    folder = tmp_path / ("quarterly-reports-of-the-northern-region-" + "z" * 40)
    folder.mkdir()
    long_pdf = folder / ("scanned-delivery-note-with-a-very-long-name-" + "y" * 50 + ".pdf")
    shutil.copy(EXAMPLES[2], long_pdf)
    broken = folder / ("encrypted-or-broken-file-whose-name-must-be-read-in-the-log-" + "w" * 30
                       + ".pdf")  # fmt: skip
    broken.write_text("not a pdf at all")
    env = {**pipeline_env, "COLUMNS": "80"}
    r = cli(env, "submit", str(long_pdf), str(broken))
    assert r.returncode == 0, r.stderr
    assert str(long_pdf) in r.stdout and str(broken) in r.stdout  # not "quarterly-repo…"
    assert "…" not in r.stdout
    sub = json.loads(cli(env, "submit", str(long_pdf), "--json").stdout)
    status = cli(env, "status", sub["batch_id"])
    line = next(ln for ln in status.stdout.splitlines() if str(long_pdf) in ln)
    assert "no live worker serves queue 'default'; start one with `pipeline worker`" in line
