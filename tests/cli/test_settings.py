"""Settings: environment, ./pipeline.toml, shipped defaults; bad input is one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import SettingsError
from pipeline.settings import load_settings
from tests.support import ROOT

pytestmark = pytest.mark.usefixtures("clean_env")


def test_defaults_come_from_the_shipped_config() -> None:
    s = load_settings()
    assert s.model == "gemini-3.5-flash-lite"
    assert s.idempotency_ttl_s == 86400 and s.worker_concurrency == 32


def test_environment_beats_pipeline_toml_beats_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    Path("pipeline.toml").write_text(
        'rpm = 50\nworker_concurrency = 8\n[limits."gemini-3.8-flash"]\nrpm = 7\n')
    monkeypatch.setenv("PIPELINE_RPM", "70")
    s = load_settings()
    assert s.rpm == 70 and s.worker_concurrency == 8
    assert s.limits_for("gemini-3.8-flash").rpm == 7
    assert s.limits_for("other").rpm == 70


def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_RPM", "lots")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value).startswith("PIPELINE_RPM: ")
    assert "\n" not in str(err.value)


def test_unknown_variable_and_unknown_toml_key_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_RMP", "5")
    with pytest.raises(SettingsError, match="PIPELINE_RMP: unknown setting"):
        load_settings()
    monkeypatch.delenv("PIPELINE_RMP")
    Path("pipeline.toml").write_text("worker_concurency = 3\n")
    with pytest.raises(SettingsError, match="worker_concurency"):
        load_settings()


def test_test_suite_variables_are_not_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_TEST_REDIS_URL", "redis://x")
    assert load_settings().redis_url is None


def test_cli_prints_one_line_not_a_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env["PIPELINE_WORKER_CONCURRENCY"] = "-3"
    out = subprocess.run([sys.executable, "-m", "pipeline", "dead", "list"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "PIPELINE_WORKER_CONCURRENCY" in out.stderr


@pytest.mark.slow
def test_wheel_ships_config_and_migrations_and_runs_from_anywhere(tmp_path: Path) -> None:
    """The built wheel, unpacked where nothing else is, must not read config/ or migrations/
    from the working directory (a wheel is a zip: unpacking it is what installing a
    pure-Python wheel does to the import path, without installing anything at test time)."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels), str(ROOT)], check=True, timeout=300)
    wheel = next(wheels.glob("pipeline-*.whl"))
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    assert "pipeline/_data/config/defaults.toml" in names
    assert "pipeline/_data/config/pricing.toml" in names
    assert "pipeline/_data/migrations/env.py" in names
    assert any(n.startswith("pipeline/_data/config/prompts/") for n in names)
    assert "tasks/pdf.py" in names
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env["PYTHONPATH"] = str(target)
    code = ("import pipeline.resources as r, pipeline.settings as s;"
            "print(r.config_path('defaults.toml')); print(r.migrations_path());"
            "print(s.load_settings().model)")
    out = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    lines = out.stdout.splitlines()
    assert lines[0].startswith(str(target)) and lines[1].startswith(str(target))
    assert lines[2] == "gemini-3.5-flash-lite"
