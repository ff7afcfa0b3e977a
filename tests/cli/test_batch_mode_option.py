"""`--mode` on `pipeline submit` (default PIPELINE_MODE) and the form field `mode` on
POST /analyze put documents in Batch Mode: their jobs carry the group they share and take no
bucket tokens; an unknown mode is refused with what to use."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import redis

from pipeline.queue.record import joined
from pipeline.redis.keys import Keys
from tests.support.api import api_client, api_settings, pdf_files
from tests.support.cli import run_cli
from tests.support.pdfs import make_pdf
from tests.support.workers import ROOT

INVOICE = str(ROOT / "examples" / "docs" / "invoice.pdf")
REPORT = make_pdf(1, "Quarterly report {n}. Revenue grew by ten percent.")
INVOICE_BYTES = make_pdf(1, "Invoice {n}. Amount due 120 EUR.")


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(env, "submit", INVOICE, "--json", *args)


def _args(sredis: redis.Redis, prefix: str, job_id: str) -> dict[str, object]:
    job = sredis.hgetall(Keys(prefix).job(job_id))
    stored = json.loads(joined(job, "args") or "")  # the task's positional arguments: [args]
    args: dict[str, object] = stored[0] if isinstance(stored, list) else stored
    return args


def test_submit_mode_batch_and_the_pipeline_mode_default(
    pipeline_env: dict[str, str], sredis: redis.Redis, key_prefix: str
) -> None:
    out = _run(pipeline_env, "--mode", "batch")
    assert out.returncode == 0, out.stderr
    job_id = json.loads(out.stdout)["documents"][0]["job_id"]
    args = _args(sredis, key_prefix, job_id)
    assert args["mode"] == "batch"
    group = args["batch_group"]
    assert isinstance(group, dict) and str(group["name"]).startswith("pipeline-")
    # The group's members are in its record, not in each job's arguments (issue 16).
    assert set(group) == {"name"}, group
    record = sredis.hget(Keys(key_prefix).batch_group(str(group["name"])), "candidates")
    assert [(m["name"], m["job_id"]) for m in json.loads(record or "[]")] == [(INVOICE,
                                                                              job_id)]
    assert json.loads(sredis.hget(Keys(key_prefix).job(job_id), "hints") or "{}") == {}

    default = _run({**pipeline_env, "PIPELINE_MODE": "batch",
                     "PIPELINE_MODEL": "gemini-2.5-flash-lite"})  # fmt: skip
    assert default.returncode == 0, default.stderr
    job_id = json.loads(default.stdout)["documents"][0]["job_id"]
    assert _args(sredis, key_prefix, job_id)["mode"] == "batch"


def test_submit_refuses_an_unknown_mode(pipeline_env: dict[str, str]) -> None:
    out = _run(pipeline_env, "--mode", "overnight")
    assert out.returncode == 2
    assert "interactive, batch or auto" in out.stderr


def test_submit_mode_auto_chooses_by_the_deadline_and_records_the_choice(
    pipeline_env: dict[str, str], sredis: redis.Redis, key_prefix: str
) -> None:
    near = _run(pipeline_env, "--mode", "auto", "--deadline", "6h")
    assert near.returncode == 0, near.stderr
    sub = json.loads(near.stdout)
    assert sub["mode"] == "interactive" and "under the 24 h" in sub["mode_why"]
    args = _args(sredis, key_prefix, sub["documents"][0]["job_id"])
    assert args["mode"] == "interactive" and args["mode_requested"] == "auto"
    assert "batch_group" not in args and str(args["deadline"]).endswith("+00:00")

    far = _run({**pipeline_env, "PIPELINE_MODEL": "gemini-2.5-flash-lite"}, "--mode", "auto",
               "--deadline", "2d")  # fmt: skip
    assert far.returncode == 0, far.stderr
    sub = json.loads(far.stdout)
    args = _args(sredis, key_prefix, sub["documents"][0]["job_id"])
    assert sub["mode"] == "batch" and args["mode"] == "batch" and "batch_group" in args


def test_submit_refuses_a_deadline_it_cannot_meet_or_read(pipeline_env: dict[str, str]) -> None:
    short = _run(pipeline_env, "--mode", "batch", "--deadline", "90m")
    assert short.returncode == 1 and "Traceback" not in short.stderr
    said = short.stdout + short.stderr
    assert "--mode auto" in said and "PIPELINE_BATCH_FALLBACK_MARGIN_S" in said, said
    unreadable = _run(pipeline_env, "--deadline", "tomorrow-ish")
    assert unreadable.returncode == 2 and "1h30m" in unreadable.stderr
    naive = _run(pipeline_env, "--deadline", "2026-12-01T12:00")
    assert naive.returncode == 2 and "no time zone" in naive.stderr


async def test_analyze_form_fields_mode_and_deadline(
    tmp_path: Path, redis_url: str, key_prefix: str, sredis: redis.Redis
) -> None:
    settings = api_settings(tmp_path, redis_url, key_prefix)
    async with api_client(settings) as (client, _):
        batch = await client.post("/analyze", files=pdf_files(("b.pdf", INVOICE_BYTES)),
                                  data={"mode": "batch"})  # fmt: skip
        assert batch.status_code == 202, batch.text
        unknown = await client.post("/analyze", files=pdf_files(("r.pdf", REPORT)),
                                    data={"mode": "later"})  # fmt: skip
        r = await client.post("/analyze", files=pdf_files(("r.pdf", REPORT)),
                              data={"mode": "auto", "deadline": "3d"})  # fmt: skip
        assert r.status_code == 202, r.text
        bad = await client.post("/analyze", files=pdf_files(("r.pdf", REPORT)),
                                data={"deadline": "whenever"})  # fmt: skip
        short = await client.post("/analyze", files=pdf_files(("s.pdf", REPORT)),
                                  data={"mode": "batch", "deadline": "1h"})  # fmt: skip
    body = r.json()
    assert body["mode"] == "batch" and body["deadline"]
    args = _args(sredis, key_prefix, body["documents"][0]["job_id"])
    assert args["mode"] == "batch" and args["mode_requested"] == "auto"
    assert bad.status_code == 422 and "deadline" in bad.text
    assert _args(sredis, key_prefix, batch.json()["documents"][0]["job_id"])["mode"] == "batch"
    assert unknown.status_code in (400, 422) and "mode" in unknown.text
    assert short.status_code == 422 and "--mode auto" in short.text
