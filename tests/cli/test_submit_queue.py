"""`pipeline submit --queue NAME` routes a batch to another queue (issue 14), says so when no
live worker serves that queue, and `--priority high` alone keeps the task's own queue."""

from __future__ import annotations

import json

import redis

from pipeline.redis.keys import Keys
from tests.support.cli import run_cli
from tests.support.workers import ROOT

INVOICE = str(ROOT / "examples" / "docs" / "invoice.pdf")


def submit(env: dict[str, str], *args: str) -> dict[str, object]:
    out = run_cli(env, "submit", INVOICE, "--json", *args)
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_submit_queue_routes_and_warns_when_nobody_serves_it(
    pipeline_env: dict[str, str], sredis: redis.Redis, key_prefix: str
) -> None:
    sub = submit(pipeline_env, "--queue", "night", "--priority", "high")
    job_id = sub["documents"][0]["job_id"]  # type: ignore[index]
    job = sredis.hgetall(Keys(key_prefix).job(job_id))
    assert job["queue"] == "night" and job["priority"] == "9"
    warnings = sub["warnings"]
    assert isinstance(warnings, list)
    assert any("no live worker serves queue 'night'" in w for w in warnings)


def test_priority_alone_keeps_the_tasks_queue(
    pipeline_env: dict[str, str], sredis: redis.Redis, key_prefix: str
) -> None:
    sub = submit(pipeline_env, "--priority", "high")
    job_id = sub["documents"][0]["job_id"]  # type: ignore[index]
    job = sredis.hgetall(Keys(key_prefix).job(job_id))
    assert job["queue"] == "default" and job["priority"] == "9"
    assert not any("queue" in str(w) for w in sub["warnings"])  # type: ignore[attr-defined]
