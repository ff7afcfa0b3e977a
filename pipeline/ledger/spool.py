"""The ledger's last resort: a local file for writes that neither the database nor Redis took.

The recorder writes to the database, or, while the database refuses, to a Redis list. When
both refuse at once (Redis restarting while SQLite is locked, say), a write — possibly the
record of a paid answer — must still not be lost: it is appended here, one JSON line per
write, fsynced, in a file of this process under PIPELINE_HOME/spool/. Any process on the
same home replays every spool file (its own, or one a dead process left) once the database
takes writes again, and deletes it. Writes are idempotent (pipeline/ledger/writes.py), so a
replay cut short by a crash is simply done again.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Entry = tuple[str, dict[str, Any]]


class LocalSpool:
    """Append-only JSON-lines files in `directory`, one per process (`ledger-<pid>.jsonl`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / f"ledger-{os.getpid()}.jsonl"

    def append(self, op: str, payload: dict[str, Any]) -> None:
        """Keep one write on disk (flushed and fsynced before returning); raises OSError."""
        self.directory.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"op": op, "payload": payload}) + "\n"
        while True:
            with open(self.path, "a", encoding="utf-8") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                if os.fstat(handle.fileno()).st_nlink == 0:
                    continue  # replayed and deleted while we waited for the lock: a new file
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
                break
        log.warning("ledger: %s kept in the local spool %s (database and Redis both refused)",
                    op, self.path)  # fmt: skip

    def pending(self) -> bool:
        return self.directory.is_dir() and any(self.directory.glob("ledger-*.jsonl"))

    def replay(self, apply: Callable[[list[Entry]], None]) -> int:
        """Apply every spool file's entries with `apply` (one call per file, in order) and
        delete the file; a file another process is writing or replaying is left for later.
        Returns how many entries were applied. `apply`'s exceptions propagate (file kept)."""
        applied = 0
        if not self.directory.is_dir():
            return 0
        for path in sorted(self.directory.glob("ledger-*.jsonl")):
            with open(path, "r+", encoding="utf-8") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                entries = []
                for line in handle:
                    if line.strip():
                        doc = json.loads(line)
                        entries.append((str(doc["op"]), dict(doc["payload"])))
                if entries:
                    apply(entries)
                path.unlink()
                applied += len(entries)
        return applied
