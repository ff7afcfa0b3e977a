"""What `pipeline status` imports: the commands that show batches and results read the offline
analyzer's page wording and model version, not the analyzer itself (numpy, sumy, YAKE,
dateparser, segtok: ~0.2 s of CPU at every call, and the tests alone make hundreds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.workers import worker_env

ANALYZER_ONLY = ("numpy", "sumy", "yake", "dateparser", "segtok", "py3langid",
                 "gender_guesser", "pipeline.llm.offline.analysis")  # fmt: skip


def test_status_does_not_import_the_offline_analyzer(tmp_path: Path, redis_url: str) -> None:
    env = worker_env(redis_url, "test-read-imports", PIPELINE_HOME=str(tmp_path / "home"),
                     PIPELINE_DATABASE_URL=f"sqlite:///{tmp_path / 'ledger.db'}")  # fmt: skip
    command = [sys.executable, "-X", "importtime", "-m", "pipeline", "status"]
    run = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    loaded = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines()
              if line.startswith("import time:")}  # fmt: skip
    assert "tasks.result" in loaded  # the path under test was taken
    assert not {m for m in loaded if m.split(".")[0] in ANALYZER_ONLY or m in ANALYZER_ONLY}
