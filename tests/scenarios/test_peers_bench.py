"""Smoke test of bench/peers.py's driver: one real trap run per installed peer.

Skips when the peers' virtualenvs (made by `python bench/peers.py` on its first run) are
absent: the main suite never installs Celery, RQ, ARQ, SAQ or Dramatiq. pipeline itself always runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from bench.peers import VENVS, claim_dbs, db_url, release_dbs
from tests.support import ROOT

pytestmark = pytest.mark.slow


def _python(system: str) -> Path:
    return Path(sys.executable) if system == "pipeline" else VENVS / system / "bin" / "python"


@pytest.mark.parametrize("system", ["pipeline", "celery", "rq", "arq", "saq", "dramatiq"])
def test_prefetch_trap_runs_and_cleans_up(system: str, redis_url: str, tmp_path: Path) -> None:
    python = _python(system)
    if not python.exists():
        pytest.skip(f"no {system} venv at {VENVS / system}; run `python bench/peers.py --quick`")
    base = redis_url.rsplit("/", 1)[0] + "/0"
    run_id = f"test-{tmp_path.name}"
    try:
        [db] = claim_dbs(base, 1, run_id)
    except SystemExit as exc:
        pytest.skip(str(exc))
    pidfile = tmp_path / "pids"
    try:
        done = subprocess.run(
            [str(python), str(ROOT / "bench" / "peers_driver.py"), "--system", system,
             "--phase", "prefetch", "--redis-url", db_url(base, db), "--quick",
             "--venv-bin", str(python.parent), "--pidfile", str(pidfile),
             "--logdir", str(tmp_path / "logs")],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        figures = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        release_dbs(base, [db], run_id)
    assert figures["completed"] == figures["short_jobs"] + 1
    assert figures["makespan_s"] >= figures["ideal_s"]
    if system not in ("celery", "dramatiq"):  # their default prefetch is the trap being shown
        assert figures["short_jobs_stuck_behind_long"] == 0
    for pid in pidfile.read_text().split():  # every worker the driver started is gone
        assert not Path(f"/proc/{pid}").exists() or b"PEERS_REDIS_URL=" not in Path(
            f"/proc/{pid}/environ").read_bytes()
    assert redis.Redis.from_url(db_url(base, db)).dbsize() == 0
