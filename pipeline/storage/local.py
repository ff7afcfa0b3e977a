"""A stored document as a local file, for as long as a job reads it.

A worker's jobs read their PDF by path, never as bytes held from claim to end: the pool
process that inspects it or looks for pages without text opens the file itself, and the
Files API upload streams it (pipeline/llm/uploads.py). So 32 jobs waiting for 2 pool
processes, or for the limiter, hold 32 paths, not 32 PDFs (bench/documents.py --only worker).

The file store's own file is that path (nothing is copied). A store without local files
(S3) gets a copy written under `scratch` when the block starts and deleted when it ends: the
bytes are in memory only while the copy is written. A worker killed in between leaves its
copies behind; the next copy made in that folder removes those older than a day (a job's
timeout is far shorter).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.storage import DocumentStore, check_sha256

# A copy older than this belongs to a worker that died while a job read it.
STALE_COPY_S = 86400.0


@dataclass(frozen=True)
class LocalFile:
    """`path` to read the document's bytes from; `size` in bytes; `copy` when it is a
    temporary copy (deleted when the block ends), not the stored file."""

    path: Path
    size: int
    copy: bool


def _remove_stale(scratch: Path, now: float) -> None:
    for entry in scratch.iterdir():
        with contextlib.suppress(FileNotFoundError):  # another worker removed it first
            if now - entry.stat().st_mtime > STALE_COPY_S:
                entry.unlink()


def _copy(store: DocumentStore, sha256: str, scratch: Path) -> Path:
    scratch.mkdir(parents=True, exist_ok=True)
    _remove_stale(scratch, time.time())
    data = store.get(sha256)  # raises DocumentMissing
    fd, name = tempfile.mkstemp(dir=scratch, prefix=f"{sha256[:16]}-", suffix=".pdf")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise
    return Path(name)


def _open(store: DocumentStore, sha256: str, scratch: Path) -> LocalFile:
    check_sha256(sha256)
    path = store.local_path(sha256)  # raises DocumentMissing
    copy = path is None
    if path is None:
        path = _copy(store, sha256, scratch)
    return LocalFile(path, path.stat().st_size, copy)


async def _discard(opening: asyncio.Future[LocalFile]) -> None:
    """Once `opening` ends (however often this task is cancelled meanwhile: the thread
    runs on regardless), delete the copy it made, if any."""
    while not opening.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({opening})
    if opening.cancelled() or opening.exception() is not None:
        return  # nothing was made (_copy removes a half-written copy itself)
    _remove_copy(opening.result())


def _remove_copy(found: LocalFile) -> None:
    """Delete `found` when it is a temporary copy (never the store's own file)."""
    if found.copy:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(found.path)


@contextlib.asynccontextmanager
async def local_file(store: DocumentStore, sha256: str, scratch: Path) -> AsyncIterator[LocalFile]:
    """The document `sha256` as a local file for the block (blocking I/O in a thread).
    Raises DocumentMissing when the store does not have it. Cancelled while the copy is
    being made, it waits for the copy and deletes it before the cancellation goes on."""
    opening = asyncio.ensure_future(asyncio.to_thread(_open, store, sha256, scratch))
    try:
        found = await asyncio.shield(opening)
    except asyncio.CancelledError:
        # The thread cannot be stopped: it goes on to write the copy. Wait for it and remove
        # what it made, or the copy would sit in `scratch` until the day-old sweep.
        await _discard(opening)
        raise
    try:
        yield found
    finally:
        _remove_copy(found)
