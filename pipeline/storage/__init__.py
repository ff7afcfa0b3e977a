"""The document store: PDF bytes by content hash, outside Redis.

Redis holds only references (pipeline/storage/holds.py); the bytes live here, behind one
small interface with two backends:

- `file` (the default): a folder under PIPELINE_HOME (`<home>/documents`), or any folder
  given as `file:///abs/path`. With workers on several machines that folder must be shared
  (NFS, SMB…), or use S3.
- `s3://bucket/prefix`: S3-compatible object storage through boto3, for several machines;
  PIPELINE_DOCUMENT_STORE_ENDPOINT names a non-AWS server (MinIO, Ceph…), credentials come
  from boto3's usual chain (AWS_ACCESS_KEY_ID…). Tested against moto's S3 server over HTTP,
  not against AWS itself or MinIO.

Keys are sha256 hex digests of the bytes, so a put of the same key always carries the same
bytes and concurrent puts are harmless. Methods are blocking (file and HTTP I/O): async
callers run them with `asyncio.to_thread`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pipeline.errors import DocumentStoreError

if TYPE_CHECKING:
    from pipeline.settings import Settings

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class DocumentStore(Protocol):
    """Bytes by sha256. `where` names the place for people (a folder, an s3:// URL)."""

    where: str

    def put(self, sha256: str, data: bytes) -> None:
        """Store `data` under `sha256` (its hash); a second put of it refreshes its age."""

    def get(self, sha256: str) -> bytes:
        """The bytes; raises DocumentMissing (saying where it looked) when absent."""

    def delete(self, sha256: str) -> None:
        """Remove the bytes; absent is fine."""

    def exists(self, sha256: str) -> bool:
        """Whether the bytes are there."""

    def local_path(self, sha256: str) -> Path | None:
        """The stored file itself when the store keeps documents as local (or shared) files,
        for readers that take a path and so never hold the bytes (raises DocumentMissing when
        absent); None for a store without local files (S3): pipeline/storage/local.py then
        makes a local copy."""

    def sweep(self, older_than_s: float) -> int:
        """Remove every document last put more than `older_than_s` seconds ago; how many."""


def check_sha256(sha256: str) -> str:
    """The key, refused unless 64 lowercase hex digits (it becomes a path or object name)."""
    if not _SHA256.match(sha256):
        raise DocumentStoreError(f"{sha256!r} is not a sha256 hex digest")
    return sha256


def missing_message(sha256: str, where: str) -> str:
    return (
        f"the document {sha256[:12]}… is not in the store at {where}; with several machines "
        "use a shared folder or S3 (PIPELINE_DOCUMENT_STORE). It is removed when its last job "
        "ends or after PIPELINE_DOCUMENT_RETENTION_S: submit the file again to put it back"
    )


def open_store(settings: Settings) -> DocumentStore:
    """The store PIPELINE_DOCUMENT_STORE names: `file`, `file:///abs/folder` or
    `s3://bucket[/prefix]`. Raises DocumentStoreError for anything else."""
    spec = settings.document_store.strip()
    if spec == "file":
        from pipeline.storage.files import FileStore

        return FileStore(settings.home / "documents")
    if spec.startswith("file://"):
        from pipeline.storage.files import FileStore

        return FileStore(Path(spec.removeprefix("file://")))
    if spec.startswith("s3://"):
        from pipeline.storage.s3 import S3Store

        bucket, _, prefix = spec.removeprefix("s3://").partition("/")
        if not bucket:
            raise DocumentStoreError(f"PIPELINE_DOCUMENT_STORE={spec!r}: no bucket named")
        return S3Store(bucket, prefix, endpoint_url=settings.document_store_endpoint)
    raise DocumentStoreError(
        f"PIPELINE_DOCUMENT_STORE={spec!r}: give `file`, `file:///abs/folder` "
        "(a folder shared by every machine) or `s3://bucket/prefix`"
    )
