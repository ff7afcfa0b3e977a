"""The document store in a local (or shared) folder: `<root>/<sha[:2]>/<sha>`."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

from pipeline.errors import DocumentMissing
from pipeline.storage import check_sha256, missing_message

# A temp file older than this belongs to a writer that died mid-put.
_STALE_TEMP_S = 3600.0


class FileStore:
    """Documents as files. A put writes a temp file in the same folder and renames it into
    place (os.replace is atomic on POSIX), so a reader sees all the bytes or none, and two
    puts of the same content race harmlessly: both renames carry identical bytes.
    The file's mtime is its age for `sweep`; a put of a present document refreshes it."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self.where = str(self.root)

    def path(self, sha256: str) -> Path:
        sha = check_sha256(sha256)
        return self.root / sha[:2] / sha

    def put(self, sha256: str, data: bytes) -> None:
        target = self.path(sha256)
        if target.exists():
            with contextlib.suppress(FileNotFoundError):  # swept meanwhile: write it below
                os.utime(target)
                return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".put-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise

    def get(self, sha256: str) -> bytes:
        path = self.path(sha256)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise DocumentMissing(missing_message(sha256, self.where)) from None

    def delete(self, sha256: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(sha256).unlink()

    def local_path(self, sha256: str) -> Path:
        path = self.path(sha256)
        if not path.is_file():
            raise DocumentMissing(missing_message(sha256, self.where))
        return path

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def sweep(self, older_than_s: float) -> int:
        if not self.root.is_dir():
            return 0
        now = time.time()
        removed = 0
        for sub in self.root.iterdir():
            if not sub.is_dir():
                continue
            for entry in sub.iterdir():
                temp = entry.name.startswith(".put-")
                limit = _STALE_TEMP_S if temp else older_than_s
                try:
                    if now - entry.stat().st_mtime > limit:
                        entry.unlink()
                        removed += not temp
                except FileNotFoundError:  # another worker's sweep got there first
                    continue
        return removed
