"""Telling a ledger database that is out of space from one that is away, and saying so.

Both refuse writes, and the recorder treats both alike (the writes wait in Redis, /healthz
says degraded), but a full disk does not heal by itself: someone must free space. So it is
logged at ERROR, naming the cause, at most every `LOG_EVERY_S` while it lasts, rather than
as one warning among the ordinary "database unreachable" ones.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("pipeline.ledger.recorder")

# Messages of a database that answers but cannot store: SQLite's SQLITE_FULL, PostgreSQL's
# disk_full (SQLSTATE 53100) and "could not extend file", and the OS's ENOSPC.
_MARKS = ("database or disk is full", "disk full", "could not extend file", "no space left")
LOG_EVERY_S = 30.0


def is_disk_full(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(mark in text for mark in _MARKS)


class FullDiskAlarm:
    """`report(exc)`: True (and logged, throttled) when `exc` says the database is full."""

    def __init__(self) -> None:
        self._logged_at = float("-inf")

    def report(self, exc: BaseException) -> bool:
        if not is_disk_full(exc):
            return False
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            first = str(exc).splitlines()[0]
            log.error("ledger database is out of space (%s): every ledger write now waits in "
                      "Redis and is replayed once space is freed; free disk space where the "
                      "database lives (PIPELINE_DATABASE_URL)", first)  # fmt: skip
        return True
