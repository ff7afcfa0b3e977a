"""Versioned prompts, read from config/prompts/<name>/<vN>.toml.

The version string is part of every call key and every stored result, so it has to change
whenever the words sent to the model change. A hand-maintained `version` alone cannot
promise that (someone edits the text and forgets to bump it), so the effective version is
the declared one plus a hash of the file: `analyze-v1+3f2a9c1d`. Editing a prompt thus
never serves an answer that was produced by the old wording.
"""

from __future__ import annotations

import hashlib
import re
import string
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import SettingsError
from pipeline.resources import config_path

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_FILE_VERSION = re.compile(r"^v(\d+)$")
_KEYS = {"version", "description", "variables", "system", "user_template"}
_REQUIRED = {"version", "system", "user_template"}


@dataclass(frozen=True)
class Prompt:
    name: str
    version: str  # declared version + "+" + first 8 hex of content_hash
    system: str
    user_template: str
    content_hash: str  # sha256 of the prompt file's bytes
    variables: tuple[str, ...] = ()
    description: str = ""

    def render(self, **values: object) -> str:
        """The user message with every `$variable` filled; missing or unexpected ones raise.

        Strictness both ways, because a silently empty `$analyses` would cost a paid call
        that answers the wrong question, and an ignored extra value hints at a typo.
        """
        missing = [v for v in self.variables if v not in values]
        unexpected = sorted(set(values) - set(self.variables))
        if missing or unexpected:
            raise ValueError(
                f"prompt {self.version}: missing values {missing}, unexpected {unexpected}; "
                f"it takes exactly {list(self.variables)}"
            )
        return string.Template(self.user_template).substitute(
            {k: str(v) for k, v in values.items()}
        )


def prompts_dir(name: str) -> Path:
    if not _NAME.match(name):
        raise SettingsError(
            f"prompt name {name!r} is not valid: use lowercase letters, digits, - and _"
        )
    return config_path("prompts", name)


def available_versions(name: str) -> list[str]:
    """File versions of one prompt (`v1`, `v2`, …), oldest first."""
    folder = prompts_dir(name)
    found = [p.stem for p in folder.glob("v*.toml") if _FILE_VERSION.match(p.stem)]
    return sorted(found, key=lambda v: int(v[1:]))


def load_prompt(name: str, version: str | None = None) -> Prompt:
    """The prompt `name` at file version `version` (`v1`), or its newest version."""
    versions = available_versions(name)
    if not versions:
        raise SettingsError(
            f"no prompt {name!r}: expected files like {prompts_dir(name) / 'v1.toml'}"
        )
    chosen = version or versions[-1]
    if chosen not in versions:
        raise SettingsError(
            f"prompt {name!r} has no version {chosen!r} (have: {', '.join(versions)}); "
            f"add {prompts_dir(name) / (chosen + '.toml')} or pick one of those"
        )
    path = prompts_dir(name) / f"{chosen}.toml"
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"{path}: not valid TOML ({exc}); fix the file") from None
    unknown = sorted(set(data) - _KEYS)
    missing = sorted(_REQUIRED - set(data))
    if unknown or missing:
        raise SettingsError(
            f"{path}: unknown keys {unknown}, missing keys {missing}; "
            f"allowed keys are {sorted(_KEYS)}"
        )
    if not all(isinstance(data[k], str) for k in _REQUIRED):
        raise SettingsError(f"{path}: version, system and user_template must be strings")
    variables = tuple(data.get("variables", ()))
    _check_placeholders(path, data["user_template"], variables)
    content_hash = hashlib.sha256(raw).hexdigest()
    return Prompt(
        name=name,
        version=f"{data['version']}+{content_hash[:8]}",
        system=data["system"].strip(),
        user_template=data["user_template"].strip(),
        content_hash=content_hash,
        variables=variables,
        description=str(data.get("description", "")),
    )


def _check_placeholders(path: Path, template: str, variables: tuple[str, ...]) -> None:
    """Catch a template/variables mismatch when the file is loaded, not at the first call."""
    parsed = string.Template(template)
    if not parsed.is_valid():
        raise SettingsError(f"{path}: user_template has a stray '$'; write '$$' for a dollar sign")
    used = set(parsed.get_identifiers())
    if used != set(variables):
        raise SettingsError(
            f"{path}: user_template uses {sorted(used)} but variables lists "
            f"{sorted(variables)}; make them match"
        )
