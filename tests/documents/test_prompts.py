"""Prompt files: loading, strict rendering, and versions that follow the file's content."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

import tasks.prompts as prompts
from pipeline.errors import SettingsError
from pipeline.resources import config_path
from tasks.prompts import available_versions, load_prompt


@pytest.mark.parametrize("name", ["analyze", "reduce", "repair"])
def test_shipped_prompts_load(name: str) -> None:
    prompt = load_prompt(name)
    raw = config_path("prompts", name, "v1.toml").read_bytes()
    assert prompt.name == name
    assert prompt.content_hash == hashlib.sha256(raw).hexdigest()
    assert prompt.version == f"{name}-v1+{prompt.content_hash[:8]}"
    assert prompt.system and prompt.user_template
    assert load_prompt(name, "v1") == prompt


def test_render_fills_every_variable_and_refuses_mistakes() -> None:
    prompt = load_prompt("analyze")
    text = prompt.render(filename="invoice.pdf", page_count=40, first_page=1, last_page=12)
    assert '"invoice.pdf"' in text
    assert "pages 1 to 12 of a document that has 40 pages" in text
    assert "$" not in text
    with pytest.raises(ValueError, match="missing values"):
        prompt.render(filename="x.pdf", page_count=1, first_page=1)
    with pytest.raises(ValueError, match=r"unexpected \['pages'\]"):
        prompt.render(filename="x.pdf", page_count=1, first_page=1, last_page=1, pages=3)


def test_values_with_dollar_signs_are_not_expanded() -> None:
    prompt = load_prompt("repair")
    text = prompt.render(error="bad", invalid_json='{"amount": "$last_page"}', schema="{}")
    assert '{"amount": "$last_page"}' in text


@pytest.fixture
def prompt_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of config/prompts, so tests can edit prompt files freely."""
    shutil.copytree(config_path("prompts"), tmp_path / "prompts")
    monkeypatch.setattr(prompts, "config_path", lambda *parts: tmp_path.joinpath(*parts))
    return tmp_path / "prompts"


def test_editing_a_prompt_changes_its_version(prompt_root: Path) -> None:
    before = load_prompt("analyze")
    path = prompt_root / "analyze" / "v1.toml"
    path.write_text(path.read_text().replace("careful document analyst", "meticulous analyst"))
    after = load_prompt("analyze")
    assert after.version != before.version
    assert after.version.startswith("analyze-v1+")
    assert "meticulous analyst" in after.system


def test_newest_version_is_the_default(prompt_root: Path) -> None:
    source = (prompt_root / "analyze" / "v1.toml").read_text()
    for n in (2, 10):
        text = source.replace('version = "analyze-v1"', f'version = "analyze-v{n}"')
        (prompt_root / "analyze" / f"v{n}.toml").write_text(text)
    assert available_versions("analyze") == ["v1", "v2", "v10"]
    assert load_prompt("analyze").version.startswith("analyze-v10+")
    assert load_prompt("analyze", "v2").version.startswith("analyze-v2+")


def test_unknown_prompts_and_versions_say_what_exists(prompt_root: Path) -> None:
    with pytest.raises(SettingsError, match=r"has no version 'v9' \(have: v1\)"):
        load_prompt("analyze", "v9")
    with pytest.raises(SettingsError, match="no prompt 'summarise'"):
        load_prompt("summarise")
    with pytest.raises(SettingsError, match="not valid"):
        load_prompt("../analyze")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t + '\ntemperature = 0.2\n', r"unknown keys \['temperature'\]"),
        (lambda t: t.replace('"last_page"]', '"last_page", "extra"]'), "make them match"),
        (lambda t: t.replace("$filename", "$ filename"), "stray '\\$'"),
        (lambda t: t.replace('version = "analyze-v1"', ""), r"missing keys \['version'\]"),
        (lambda t: t + "\n[broken\n", "not valid TOML"),
    ],
)
def test_malformed_prompt_files_are_refused(prompt_root: Path, change, message: str) -> None:
    path = prompt_root / "analyze" / "v1.toml"
    path.write_text(change(path.read_text()))
    with pytest.raises(SettingsError, match=message):
        load_prompt("analyze")
