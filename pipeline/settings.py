"""Typed settings: environment (PIPELINE_*), then ./pipeline.toml, then config/defaults.toml.

Unknown keys are rejected rather than silently dropped (a typo in `PIPELINE_RMP` would
otherwise leave the real limit in force), and a bad value is a one-line error naming
the variable to fix.
"""

from __future__ import annotations

import os
import re
import tomllib
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings import SettingsError as SourceError

from pipeline.errors import SettingsError
from pipeline.resources import config_path
from pipeline.words import counted

ENV_PREFIX = "PIPELINE_"
# Variables that share the prefix but belong to the test suite, not to the settings.
_NOT_SETTINGS = ("PIPELINE_TEST_",)
# An API key shorter than this can be guessed; OWASP's ASVS asks for 128 bits of entropy,
# which `secrets.token_urlsafe(16)` (22 characters) gives.
MIN_API_KEY_CHARS = 16
_SECRET_SETTINGS = ("api_keys",)  # never echoed back in an error message


class ModelLimits(BaseModel):
    """Per-model ceilings for the shared limiter; missing fields fall back to the globals."""

    model_config = ConfigDict(extra="forbid")
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    rpd: int | None = Field(default=None, gt=0)
    max_concurrent_calls: int | None = Field(default=None, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        toml_file="pipeline.toml",
        env_parse_none_str="",
    )

    home: Path = Path(".pipeline")
    redis_url: str | None = None
    database_url: str | None = None
    key_prefix: str = Field(default="pipeline", pattern=r"^[A-Za-z0-9_.:-]+$")
    provider: Literal["auto", "gemini", "offline", "emulator"] = "auto"
    model: str = "gemini-3.5-flash-lite"
    # Gemini Batch Mode (tasks/batch_mode.py): the default `--mode`, and how often a document
    # waiting in a batch job looks at it (first look after batch_poll_s, doubling to the max).
    mode: Literal["interactive", "batch", "auto"] = "interactive"
    # `--deadline` (tasks/modes.py): `auto` uses Batch Mode only when the deadline is at least
    # batch_room_s away (Google's turnaround target is 24 h, GEMINI.md §3.6); a document still
    # in a batch job batch_fallback_margin_s before its deadline is finished interactively.
    batch_room_s: float = Field(default=86400.0, gt=0)
    batch_fallback_margin_s: float = Field(default=7200.0, ge=0)
    batch_poll_s: float = Field(default=30.0, gt=0)
    batch_poll_max_s: float = Field(default=600.0, gt=0)
    # How long a worker that died while creating a batch job delays the next one (the create
    # lock's lifetime; longer than a create call can take).
    batch_create_lock_s: float = Field(default=300.0, gt=0)

    idempotency_ttl_s: int = Field(default=86400, gt=0)
    result_ttl_s: int = Field(default=604800, gt=0)
    min_lease_s: float = Field(default=2.0, gt=0)
    worker_concurrency: int = Field(default=32, gt=0)
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    heartbeat_interval_s: float = Field(default=2.0, gt=0)
    sweep_interval_s: float = Field(default=0.5, gt=0)
    cpu_workers: int = Field(default=2, gt=0)
    cpu_max_tasks_per_child: int = Field(default=50, gt=0)

    rpm: int = Field(default=1000, gt=0)
    tpm: int = Field(default=1_000_000, gt=0)
    rpd: int = Field(default=10_000, gt=0)
    max_concurrent_calls: int = Field(default=64, gt=0)
    # The window rpm/tpm are counted over: 60 for real quotas; tests shrink it.
    limit_period_s: float = Field(default=60.0, gt=0)
    call_ttl_s: int = Field(default=30 * 86400, gt=0)  # a paid answer is reused this long
    # Provider attempts one job may make across all its calls (retries included), per run.
    max_call_attempts_per_job: int = Field(default=10, gt=0)
    limits: dict[str, ModelLimits] = Field(default_factory=dict)

    budget_day_usd: Decimal | None = Field(default=None, ge=0)
    budget_month_usd: Decimal | None = Field(default=None, ge=0)
    # How often workers rebuild budgets and job records from the ledger (pipeline/ledger/
    # reconcile.py); a ledger job Redis has not known for this long is marked lost.
    reconcile_interval_s: float = Field(default=60.0, gt=0)

    max_upload_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    # The HTTP API: upload bytes it receives at once (past it: 503 + Retry-After), and how
    # uploads are inspected: pool processes, and each document's time and memory limit.
    max_concurrent_upload_bytes: int = Field(default=200 * 1024 * 1024, gt=0)
    inspect_workers: int = Field(default=2, gt=0)
    inspect_timeout_s: float = Field(default=10.0, gt=0)  # CPU seconds per upload (pdf_guard)
    inspect_memory_mb: int = Field(default=512, gt=0)
    # Document analysis (tasks/analyze.py, tasks/submission.py).
    # Where PDF bytes wait for workers (pipeline/storage/): `file` (<home>/documents),
    # `file:///abs/folder` (shared by every machine) or `s3://bucket/prefix`.
    document_store: str = "file"
    document_store_endpoint: str | None = None  # an S3-compatible server's URL (MinIO…)
    # Backstop: bytes last put longer ago are swept even if a job never let go of them.
    document_retention_s: int = Field(default=7 * 86400, gt=0)
    max_document_pages: int = Field(default=3000, gt=0)  # longer PDFs are refused at submit
    # Input tokens one analysis call may carry; a longer document is split into a chord.
    context_budget_tokens: int = Field(default=200_000, gt=0)
    # JSON size of one stored result, whatever the page count (tasks/merge.py trims to it).
    max_result_bytes: int = Field(default=16_384, ge=4096)
    # Gemini's limit on one inline request, base64 included (GEMINI.md §3.5); a part whose
    # real request is larger is split again, a page that alone is larger refused at submit.
    max_inline_request_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    # An interactive call sends a PDF (or part) of at least this many bytes through the Files
    # API (upload, fileData, delete) instead of inline base64: pipeline/llm/uploads.py says
    # why 4 MB.
    files_api_min_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    # Batch Mode (pipeline/llm/batch_group.py): Gemini's limit on a batch's inline requests
    # together (GEMINI.md §3.6); a larger group goes as a JSONL input file through the Files
    # API, and a request of that file larger than batch_line_max_bytes sends its PDF as an
    # uploaded file (fileData) instead of inline base64.
    batch_inline_max_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    batch_line_max_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    api_keys: str | None = None  # comma-separated bearer keys

    @field_validator("api_keys")
    @classmethod
    def _long_enough(cls, value: str | None) -> str | None:
        keys = [k.strip() for k in (value or "").split(",") if k.strip()]
        short = [k for k in keys if len(k) < MIN_API_KEY_CHARS]
        if short:
            raise ValueError(
                f"{counted(len(short), 'key')} shorter than {MIN_API_KEY_CHARS} characters, which "
                "can be guessed; make each one with `python -c \"import secrets; "
                "print(secrets.token_urlsafe(32))\"`"
            )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            _FilteredEnv(env_settings),
            TomlConfigSettingsSource(settings_cls, toml_file=Path("pipeline.toml")),
            TomlConfigSettingsSource(settings_cls, toml_file=config_path("defaults.toml")),
        )

    def limits_for(self, model: str) -> ModelLimits:
        """The bucket ceilings for one model: its own table in pipeline.toml, else the globals."""
        own = self.limits.get(model, ModelLimits())
        return ModelLimits(
            rpm=own.rpm or self.rpm,
            tpm=own.tpm or self.tpm,
            rpd=own.rpd or self.rpd,
            max_concurrent_calls=own.max_concurrent_calls or self.max_concurrent_calls,
        )

    @property
    def api_key_list(self) -> list[str]:
        return [k.strip() for k in (self.api_keys or "").split(",") if k.strip()]

    @property
    def redis_dir(self) -> Path:
        return self.home / "redis"

    @property
    def sqlite_path(self) -> Path:
        return self.home / "pipeline.db"


class _FilteredEnv(PydanticBaseSettingsSource):
    """The environment source, minus the test suite's own PIPELINE_TEST_* variables."""

    def __init__(self, inner: PydanticBaseSettingsSource) -> None:
        super().__init__(inner.settings_cls)
        self._inner = inner

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._inner.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        values = self._inner()
        unknown = sorted(
            name
            for name in os.environ
            if name.upper().startswith(ENV_PREFIX)
            and not name.upper().startswith(_NOT_SETTINGS)
            and name.upper()[len(ENV_PREFIX) :].lower() not in Settings.model_fields
        )
        if unknown:
            known = ", ".join(ENV_PREFIX + f.upper() for f in Settings.model_fields)
            raise SettingsError(f"{unknown[0]}: unknown setting (known: {known})")
        return values


def _describe(error: ValidationError) -> str:
    """One line naming where the bad value came from: the variable, or the pipeline.toml key."""
    first = error.errors()[0]
    loc = [str(p) for p in first["loc"]]
    key = loc[0] if loc else "setting"
    env_name = ENV_PREFIX + key.upper()
    name = env_name if env_name in os.environ else f"{key} in pipeline.toml"
    where = f" ({'.'.join(loc[1:])})" if len(loc) > 1 else ""
    if first["type"] == "extra_forbidden":
        return f"{name}{where}: unknown setting (known: {', '.join(Settings.model_fields)})"
    value = first.get("input")
    shown = f" (got {value!r})" if isinstance(value, str | int | float) else ""
    if key in _SECRET_SETTINGS:
        shown = ""
    return f"{name}{where}: {first['msg']}{shown}"


def _describe_source(error: SourceError) -> str:
    """pydantic-settings fails before validation when a complex value (a dict such as
    `limits`) is not JSON; its message names the field but not the variable to fix."""
    found = re.search(r'field "([^"]+)"', str(error))
    key = found.group(1) if found else "setting"
    cause = error.__cause__ or error.__context__
    why = f": {str(cause).splitlines()[0]}" if cause is not None else ""
    return (
        f"{ENV_PREFIX}{key.upper()}: not valid JSON{why}; "
        'give a JSON object, e.g. {"gemini-3.5-flash": {"rpm": 100}}'
    )


def _describe_toml(error: tomllib.TOMLDecodeError) -> str:
    """tomllib does not say which file it was reading; the first that fails to parse is it."""
    culprit = Path("pipeline.toml")
    for path in (Path("pipeline.toml"), config_path("defaults.toml")):
        try:
            with path.open("rb") as fh:
                tomllib.load(fh)
        except tomllib.TOMLDecodeError:
            culprit = path
            break
        except OSError:
            continue
    return f"{culprit}: not valid TOML ({error}); fix or remove the file"


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning a validation error into one line that names the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    except SourceError as exc:
        raise SettingsError(_describe_source(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(_describe_toml(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
