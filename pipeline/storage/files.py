"""The document store in a local (or shared) folder: `<root>/<sha[:2]>/<sha>`."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import DocumentMissing
from pipeline.storage import check_sha256, is_sha256, missing_message

# A temp file older than this belongs to a writer that died mid-put.
_STALE_TEMP_S = 3600.0
_HEX = frozenset("0123456789abcdef")


class FileStore:
    """Documents as files. A put writes a temp file in the same folder and renames it into
    place (os.replace is atomic on POSIX), so a reader sees all the bytes or none, and two
    puts of the same content race harmlessly: both renames carry identical bytes.
    The file's mtime is its age for the sweep; a put of a present document refreshes it.
    `this_machine_only`: the folder is one only this machine sees (for DocumentMissing's
    message). Only `<root>/<2 hex>/<sha256>` files are documents: anything else under the
    root (a key prefix's own folder, pipeline/storage/prefixed.py) is never touched."""

    def __init__(self, root: Path, *, this_machine_only: bool = False) -> None:
        self.root = root.expanduser().resolve()
        self.where = str(self.root)
        self.this_machine_only = this_machine_only

    def path(self, sha256: str) -> Path:
        sha = check_sha256(sha256)
        return self.root / sha[:2] / sha

    def _missing(self, sha256: str) -> DocumentMissing:
        return DocumentMissing(missing_message(sha256, self.where, self.this_machine_only))

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
            raise self._missing(sha256) from None

    def delete(self, sha256: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(sha256).unlink()

    def local_path(self, sha256: str) -> Path:
        path = self.path(sha256)
        if not path.is_file():
            raise self._missing(sha256)
        return path

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def _entries(self) -> Iterator[tuple[os.DirEntry[str], bool]]:
        """Each document file and put's temp file under the root, with whether it is a temp
        file: in `<2 hex>` folders only, named `<sha256>` (starting with the folder's name) or
        `.put-…`; folders and other names are left alone."""
        if not self.root.is_dir():
            return
        with os.scandir(self.root) as subs:
            shards = [d for d in subs if len(d.name) == 2 and set(d.name) <= _HEX
                      and d.is_dir(follow_symlinks=False)]  # fmt: skip
        for shard in shards:
            with contextlib.suppress(FileNotFoundError), os.scandir(shard.path) as entries:
                for entry in entries:
                    temp = entry.name.startswith(".put-")
                    named = temp or (is_sha256(entry.name) and entry.name[:2] == shard.name)
                    if named and entry.is_file(follow_symlinks=False):
                        yield entry, temp

    def aged(self, older_than_s: float) -> list[str]:
        now = time.time()
        found = []
        for entry, temp in self._entries():
            try:
                age_s = now - entry.stat(follow_symlinks=False).st_mtime
                if temp and age_s > _STALE_TEMP_S:
                    os.unlink(entry.path)
                elif not temp and age_s > older_than_s:
                    found.append(entry.name)
            except FileNotFoundError:  # another worker's sweep got there first
                continue
        return found

    def delete_aged(self, sha256: str, older_than_s: float) -> bool:
        path = self.path(sha256)
        try:
            if time.time() - path.stat().st_mtime <= older_than_s:
                return False  # put again since it was found aged: a job needs it now
            path.unlink()
        except FileNotFoundError:
            return False
        return True
