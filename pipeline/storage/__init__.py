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

Each key prefix (PIPELINE_KEY_PREFIX) has a part of the store of its own,
`<folder>/<prefix>/…` or `s3://bucket/prefix/<prefix>/…` (pipeline/storage/prefixed.py):
which jobs hold a document is kept in Redis per prefix, so only that prefix's jobs may
decide when its bytes go. A rehearsal under another prefix stores its own copy and can
never remove the bytes a queued job of the main prefix still needs.

Keys are sha256 hex digests of the bytes, so a put of the same key always carries the same
bytes and concurrent puts are harmless. Methods are blocking (file and HTTP I/O): async
callers run them with `asyncio.to_thread`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from pipeline.errors import DocumentStoreError

if TYPE_CHECKING:
    from pipeline.settings import Settings
    from pipeline.storage.prefixed import PrefixedStore

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LOOPBACK = ("localhost", "127.", "::1")


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

    def aged(self, older_than_s: float) -> list[str]:
        """The digests of the documents last put more than `older_than_s` seconds ago, for the
        retention sweep to remove those no job holds (pipeline/storage/holds.py). A folder
        store also removes, on the way, the temp files of writers that died mid-put."""

    def delete_aged(self, sha256: str, older_than_s: float) -> bool:
        """Remove the document if it is still last put more than `older_than_s` seconds ago
        (a put since then keeps it); whether it was removed."""


def check_sha256(sha256: str) -> str:
    """The key, refused unless 64 lowercase hex digits (it becomes a path or object name)."""
    if not _SHA256.match(sha256):
        raise DocumentStoreError(f"{sha256!r} is not a sha256 hex digest")
    return sha256


def is_sha256(name: str) -> bool:
    """Whether `name` is a document's name in the store (a sha256 hex digest)."""
    return bool(_SHA256.match(name))


def missing_message(sha256: str, where: str, this_machine_only: bool = False) -> str:
    """Why a document may be missing, for DocumentMissing. `this_machine_only`: the store is a
    folder of this machine's PIPELINE_HOME while the queue's Redis is reachable from other
    machines, so a worker elsewhere may have been given a document it cannot see."""
    elsewhere = (
        ", a folder of this machine only: with workers on several machines use a shared "
        "folder or S3 (PIPELINE_DOCUMENT_STORE). Otherwise"
        if this_machine_only
        else ":"
    )
    return (
        f"the document {sha256[:12]}… is not in the store at {where}{elsewhere} its bytes stay "
        "while a job of this key prefix holds them, so they were removed from outside (by "
        "hand, or by a version before 2026-11-30 under another key prefix), or after no job "
        "had held them for PIPELINE_DOCUMENT_RETENTION_S. Submit the file again to put it back"
    )


def prefix_folder(key_prefix: str) -> str:
    """The folder (a folder store) or name segment (S3) of a key prefix's documents: the
    prefix itself, but one made of dots only (`.`, `..`) with its dots written `%2E` (a key
    prefix never holds a `%`, so no two prefixes share a folder)."""
    return key_prefix if key_prefix.strip(".") else key_prefix.replace(".", "%2E")


def queue_spans_machines(redis_url: str | None) -> bool:
    """Whether workers on other machines may share this queue: PIPELINE_REDIS_URL names a
    host other than this one (the private Redis listens on a unix socket only)."""
    if not redis_url or redis_url.startswith("unix:"):
        return False
    netloc = urlsplit(redis_url).netloc.rpartition("@")[2]  # Sentinel, Cluster: a,b,c
    hosts = [urlsplit("//" + item.strip()).hostname or "" for item in netloc.split(",")]
    return any(not h.startswith(_LOOPBACK) for h in hosts if h)


def open_store(settings: Settings) -> PrefixedStore:
    """The part of the store PIPELINE_DOCUMENT_STORE names that belongs to the settings' key
    prefix: `file`, `file:///abs/folder` or `s3://bucket[/prefix]`, each with the key
    prefix's folder under it. Raises DocumentStoreError for anything else."""
    from pipeline.storage.prefixed import PrefixedStore

    spec = settings.document_store.strip()
    folder = prefix_folder(settings.key_prefix)
    if spec == "file" or spec.startswith("file://"):
        from pipeline.storage.files import FileStore

        root = settings.home / "documents" if spec == "file" else Path(spec.removeprefix("file://"))
        # A folder the user named may well be shared; the default one is this machine's.
        alone = spec == "file" and queue_spans_machines(settings.redis_url)
        return PrefixedStore(FileStore(root / folder, this_machine_only=alone),
                             FileStore(root, this_machine_only=alone))  # fmt: skip
    if spec.startswith("s3://"):
        from pipeline.storage.s3 import S3Store

        bucket, _, prefix = spec.removeprefix("s3://").partition("/")
        if not bucket:
            raise DocumentStoreError(f"PIPELINE_DOCUMENT_STORE={spec!r}: no bucket named")
        endpoint = settings.document_store_endpoint
        prefix = prefix.strip("/")
        own = f"{prefix}/{folder}" if prefix else folder
        return PrefixedStore(S3Store(bucket, own, endpoint_url=endpoint),
                             S3Store(bucket, prefix, endpoint_url=endpoint))  # fmt: skip
    raise DocumentStoreError(
        f"PIPELINE_DOCUMENT_STORE={spec!r}: give `file`, `file:///abs/folder` "
        "(a folder shared by every machine) or `s3://bucket/prefix`"
    )
