"""`pipeline serve` as a real process, and the API under a real uvicorn fuzzed from its own
OpenAPI schema with schemathesis: whatever the input, never a 5xx."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase

from tests.support import ROOT
from tests.support.api import api_settings, live_server


def _env(pipeline_env: dict[str, str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env.update(pipeline_env)
    env.update(extra)
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_serve_refuses_a_public_host_without_keys(pipeline_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "serve", "--host", "0.0.0.0", "--port", "0"],
        env=_env(pipeline_env), capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "0.0.0.0" in lines[0] and "PIPELINE_API_KEYS" in lines[0]
    assert "Traceback" not in proc.stderr


def test_serve_listens_and_guards_with_keys(pipeline_env: dict[str, str]) -> None:
    env = _env(pipeline_env, PIPELINE_API_KEYS="s3cret-012345678")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "serve", "--host", "127.0.0.1", "--port", "0",
         "--log-level", "warning"],
        env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match, line
        url = match.group(0)
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"{url}/healthz", timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert httpx.get(f"{url}/costs", timeout=10).status_code == 401
        auth = {"Authorization": "Bearer s3cret-012345678"}
        ok = httpx.get(f"{url}/costs", headers=auth, timeout=10)
        assert ok.status_code == 200 and ok.json()["total"]["calls"] == 0
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.slow
def test_no_5xx_for_anything_the_schema_allows(
    tmp_path: Path, redis_url: str, key_prefix: str, sredis: object
) -> None:
    settings = api_settings(
        tmp_path, redis_url, key_prefix, api_keys="fuzz-key-01234567", max_upload_bytes=256 * 1024
    )
    auth = {"Authorization": "Bearer fuzz-key-01234567"}
    with live_server(settings) as url:
        spec = httpx.get(f"{url}/openapi.json", headers=auth, timeout=10).json()
        schema = schemathesis.openapi.from_dict(spec)
        operations = [r.ok() for r in schema.get_all_operations()]
        assert {f"{o.method.upper()} {o.path}" for o in operations} >= {
            "POST /analyze", "GET /jobs/{job_id}", "GET /batches/{batch_id}", "GET /costs",
            "GET /healthz", "GET /metrics",
        }  # fmt: skip
        seen: list[int] = []
        for operation in operations:

            @hypothesis.settings(
                max_examples=12,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @hypothesis.given(case=operation.as_strategy())
            def check(case: schemathesis.Case) -> None:
                response = case.call(base_url=url, headers=auth, timeout=30)
                seen.append(response.status_code)
                assert response.status_code < 500, (
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{response.text[:300]}"
                )
                if response.status_code >= 400:
                    assert isinstance(response.json().get("detail"), str)

            check()
    assert seen and all(code < 500 for code in seen)
