"""How a long-running command logs: its level, text or JSON, and libraries kept quiet.

A worker's log should read as what the worker did: one line per job start and end
(pipeline/queue/joblog.py) and what went wrong. Libraries below it speak at INFO about
things only a developer wants — alembic's plugin and migration setup, every httpx request,
google-genai's "AFC is enabled" per call — so at any level but `debug` they are held to
WARNING; `--log-level debug` brings everything back.

`--log-format json` writes one JSON object a line: ts, level, logger, message, and the
record's own fields (a job line's job_id, task, attempt, outcome, duration_s, document,
cost_usd, traceback...), for a log collector to index.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

# Libraries that log routine detail at INFO; quiet unless --log-level debug.
NOISY = (
    "alembic", "httpx", "httpx2", "httpcore", "google_genai", "google.genai", "urllib3", "asyncio",
)  # fmt: skip
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName",
}  # fmt: skip


class LogFormat(StrEnum):
    text = "text"
    json = "json"


class JsonFormatter(logging.Formatter):
    """One JSON object per record; extra fields given to the logger become keys."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage().split("\n", 1)[0],
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                body[key] = value
        if record.exc_info and "traceback" not in body:
            body["traceback"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def configure_logging(level: str, fmt: LogFormat | str = LogFormat.text) -> None:
    """Log to stderr at `level` (debug, info, warning, error) as text or JSON."""
    handler = logging.StreamHandler(sys.stderr)
    if LogFormat(fmt) is LogFormat.json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    quiet = level.lower() != "debug"
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.NOTSET)
