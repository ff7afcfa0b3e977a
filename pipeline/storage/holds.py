"""Which jobs still need a document's bytes, kept in Redis as references only.

`keys.document(sha256)` is a hash whose fields are the ids of the jobs holding the document
(a hash, not a set: Redis before 7.2 keeps even a one-member set of strings as a hashtable,
~110 bytes more per queued document than a small hash's listpack). A job that completes
lets go of the documents its arguments name, and the last one out deletes the bytes from the
store. A job that ended without a result (failed, dead, cancelled, over budget) keeps its
hold: its document may be retried (`pipeline retry`, a resubmission), so its bytes stay until
the retention sweep (PIPELINE_DOCUMENT_RETENTION_S) removes them. Redis removes an
empty hash by itself, so "last one out" is the HLEN after an HDEL in the same transaction.

Which documents a job lets go of is a convention of the job's arguments: a first argument
that is a dict with a `"documents"` list of sha256 digests (tasks/analyze.py: a chunk job
names its part, a chord's reduce names its parts and the document), or without that list a
`"sha256"`, the one document of a document's own job (tasks/runs.py; the digest is not
written twice in a job that waits in Redis). A job may let go of a document it
never held (an HDEL of a field that is not there): that never deletes bytes another job still holds.

Backstop: every hold renews the hash's expiry to PIPELINE_DOCUMENT_RETENTION_S, and a
worker's upkeep sweeps its prefix's part of the store of documents last put longer ago than
that which no job holds any more (the hash expired), for jobs the hooks never see end (a
queued job cancelled from the CLI or API, a worker that died while letting go). A document
still held (a retry queued days after its submission) is never swept.

Key prefixes: holds are per prefix, and so is the part of the store whose bytes they govern
(pipeline/storage/prefixed.py): nothing here removes another prefix's bytes. A copy left
where every prefix shared documents before 2026-11-30 is removed only when no job of any
prefix in this Redis holds it (`held_anywhere`, a SCAN, run only when such a copy exists).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any

from pipeline.queue.job import Job
from pipeline.redis.connection import text
from pipeline.redis.keys import Keys
from pipeline.words import counted

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from pipeline.queue.client import QueueClient
    from pipeline.queue.context import JobContext
    from pipeline.storage import DocumentStore
    from pipeline.storage.prefixed import PrefixedStore

log = logging.getLogger("pipeline.storage")


def documents_of(job: Job) -> list[str]:
    """The sha256 digests a job lets go of when it ends (see the module docstring)."""
    first = job.args[0] if job.args else None
    if not isinstance(first, dict):
        return []
    docs = first.get("documents")
    if isinstance(docs, list):
        return [str(d) for d in docs]
    sha = first.get("sha256")  # a document's own job: short for "documents": [sha256]
    return [sha] if isinstance(sha, str) else []


async def hold(
    redis: Redis, keys: Keys, job_ids: Iterable[str], sha256: str, retention_s: int
) -> None:
    """Record that `job_ids` need `sha256`'s bytes; call before putting them, so a release
    running meanwhile cannot see the hash empty and delete what is being put."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(keys.document(sha256), mapping=dict.fromkeys(job_ids, ""))
        pipe.expire(keys.document(sha256), retention_s)
        await pipe.execute()


async def hold_many(
    redis: Redis, keys: Keys, holds: Iterable[tuple[str, str]], retention_s: int
) -> None:
    """`hold` for many (job id, sha256) pairs in one transaction, one round trip."""
    async with redis.pipeline(transaction=True) as pipe:
        for job_id, sha256 in holds:
            pipe.hset(keys.document(sha256), job_id, "")
            pipe.expire(keys.document(sha256), retention_s)
        await pipe.execute()


async def release(
    redis: Redis, keys: Keys, store: PrefixedStore, job_id: str, shas: Iterable[str]
) -> list[str]:
    """`job_id` no longer needs `shas`; delete this prefix's bytes of those no job of it holds
    any more (and a legacy copy no job of any prefix holds). Returns the digests deleted."""
    deleted = []
    for sha in shas:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.document(sha), job_id)
            pipe.hlen(keys.document(sha))
            _, left = await pipe.execute()
        if int(left) == 0:
            await asyncio.to_thread(store.delete, sha)
            if await asyncio.to_thread(store.legacy.exists, sha) and not await held_anywhere(
                redis, {sha}
            ):
                await asyncio.to_thread(store.legacy.delete, sha)
            deleted.append(sha)
    return deleted


async def held_anywhere(redis: Redis, shas: Collection[str]) -> set[str]:
    """Which of `shas` a job of any key prefix in this Redis holds: one SCAN of the keyspace
    (every node of a Cluster), so only for copies stored where prefixes shared them."""
    pattern = Keys.every_prefix_document(next(iter(shas)) if len(shas) == 1 else "*")
    held: set[str] = set()
    async for key in redis.scan_iter(match=pattern, count=1000):
        sha = Keys.held_document(text(key))
        if sha is not None and sha in shas:
            held.add(sha)
    return held


async def held_here(redis: Redis, keys: Keys, shas: Collection[str]) -> set[str]:
    """Which of `shas` a job of this key prefix holds (one round trip)."""
    async with redis.pipeline(transaction=False) as pipe:
        for sha in shas:
            pipe.exists(keys.document(sha))
        replies = await pipe.execute()
    return {sha for sha, n in zip(shas, replies, strict=True) if int(n)}


async def sweep(redis: Redis, keys: Keys, store: PrefixedStore, retention_s: float) -> int:
    """Remove the documents last put more than `retention_s` ago that no job holds: this
    prefix's own, and legacy copies no prefix holds. How many were removed."""

    async def part(where: DocumentStore, held: Callable[[set[str]], Awaitable[set[str]]]) -> int:
        aged = set(await asyncio.to_thread(where.aged, retention_s))
        orphans = aged - await held(aged) if aged else set()
        return await asyncio.to_thread(
            lambda: sum(where.delete_aged(sha, retention_s) for sha in sorted(orphans))
        )

    own = await part(store.own, lambda shas: held_here(redis, keys, shas))
    return own + await part(store.legacy, lambda shas: held_anywhere(redis, shas))


def document_hooks(client: QueueClient, store: PrefixedStore) -> dict[str, list[Any]]:
    """Worker hooks (pipeline/queue/worker.py's on_job_end, on_lease_expired, upkeep) that
    let go of a job's documents when it ends for good, and sweep the store as a backstop."""
    redis, keys = client.redis, client.keys
    retention_s = client.settings.document_retention_s

    async def job_end(ctx: JobContext, outcome: str, error: str | None) -> None:
        if outcome == "complete":  # ended without a result: kept for a retry
            await release(redis, keys, store, ctx.job.id, documents_of(ctx.job))

    async def upkeep() -> None:
        removed = await sweep(redis, keys, store, retention_s)
        if removed:
            log.info("document store: removed %s no job holds, past retention",
                     counted(removed, "document"))  # fmt: skip

    every_s = float(min(3600, max(1, retention_s // 4)))
    return {"on_job_end": [job_end], "upkeep": [("document-sweep", upkeep, every_s)]}
