"""Where the shipped data (config/, migrations/) lives, from a checkout or an installed wheel.

The wheel maps the top-level `config/` and `migrations/` folders into `pipeline/_data/`;
an editable install or a checkout reads them from the repository root. Nothing is read
relative to the current directory, so `pipeline` works from anywhere.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


@cache
def data_dir(name: str) -> Path:
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"pipeline data folder {name!r} is missing from this installation")


def config_path(*parts: str) -> Path:
    return data_dir("config").joinpath(*parts)


def migrations_path() -> Path:
    return data_dir("migrations")
