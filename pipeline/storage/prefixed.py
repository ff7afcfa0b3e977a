"""A key prefix's part of the document store, reading through to the shared place used before.

Which jobs hold a document is kept in Redis per key prefix (pipeline/storage/holds.py), so
the bytes are too: `own` is `<store>/<prefix>/…`, and only this prefix's jobs and sweep
remove anything from it. A rehearsal under another PIPELINE_KEY_PREFIX on the same home
(the README's advice) puts its own copy, and its last job or its sweep cannot take the bytes
a queued job of the main prefix still needs.

Upgrading: until 2026-11-30 every prefix shared `<store>/…` directly (`legacy`), and a
prefix's last job deleted bytes another prefix still held. A document stored there by an
earlier version is still found (read, looked for) while its jobs wait; new puts go to `own`.
What may delete a legacy copy knows every prefix's holds: the last job to let go of it
(holds.release) and the sweep remove it only when no job of any prefix in this Redis holds it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pipeline.errors import DocumentMissing
from pipeline.storage import DocumentStore

T = TypeVar("T")


class PrefixedStore:
    """`own`: this key prefix's documents, where puts go and what `delete` and the sweep's
    `aged`/`delete_aged` act on. `legacy`: the place every prefix shared before, read when
    `own` lacks a document (DocumentMissing then names `own`)."""

    def __init__(self, own: DocumentStore, legacy: DocumentStore) -> None:
        self.own = own
        self.legacy = legacy
        self.where = own.where

    def _either(self, read: Callable[[DocumentStore], T]) -> T:
        try:
            return read(self.own)
        except DocumentMissing as missing:
            try:
                return read(self.legacy)
            except DocumentMissing:
                raise missing from None

    def put(self, sha256: str, data: bytes) -> None:
        self.own.put(sha256, data)

    def get(self, sha256: str) -> bytes:
        return self._either(lambda store: store.get(sha256))

    def local_path(self, sha256: str) -> Path | None:
        """The stored file (this prefix's, else the legacy one); None for S3, whose readers
        copy what `get` reads (pipeline/storage/local.py)."""
        return self._either(lambda store: store.local_path(sha256))

    def exists(self, sha256: str) -> bool:
        return self.own.exists(sha256) or self.legacy.exists(sha256)

    def delete(self, sha256: str) -> None:
        """This prefix's copy only: a legacy copy may be held by another prefix."""
        self.own.delete(sha256)

    def aged(self, older_than_s: float) -> list[str]:
        return self.own.aged(older_than_s)

    def delete_aged(self, sha256: str, older_than_s: float) -> bool:
        return self.own.delete_aged(sha256, older_than_s)
