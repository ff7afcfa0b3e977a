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
worker's upkeep sweeps the store of documents last put longer ago than that, for jobs the
hooks never see end (a queued job cancelled from the CLI or API, a worker that died while
letting go).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from pipeline.queue.job import Job
from pipeline.words import counted

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from pipeline.queue.client import QueueClient
    from pipeline.queue.context import JobContext
    from pipeline.redis.keys import Keys
    from pipeline.storage import DocumentStore

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
    redis: Redis, keys: Keys, store: DocumentStore, job_id: str, shas: Iterable[str]
) -> list[str]:
    """`job_id` no longer needs `shas`; delete the bytes of those no job holds any more.
    Returns the digests deleted."""
    deleted = []
    for sha in shas:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.document(sha), job_id)
            pipe.hlen(keys.document(sha))
            _, left = await pipe.execute()
        if int(left) == 0:
            await asyncio.to_thread(store.delete, sha)
            deleted.append(sha)
    return deleted


def document_hooks(client: QueueClient, store: DocumentStore) -> dict[str, list[Any]]:
    """Worker hooks (pipeline/queue/worker.py's on_job_end, on_lease_expired, upkeep) that
    let go of a job's documents when it ends for good, and sweep the store as a backstop."""
    redis, keys = client.redis, client.keys
    retention_s = client.settings.document_retention_s

    async def job_end(ctx: JobContext, outcome: str, error: str | None) -> None:
        if outcome == "complete":  # ended without a result: kept for a retry
            await release(redis, keys, store, ctx.job.id, documents_of(ctx.job))

    async def sweep() -> None:
        removed = await asyncio.to_thread(store.sweep, retention_s)
        if removed:
            log.info("document store: removed %s past retention", counted(removed, "document"))

    upkeep: list[tuple[str, Callable[[], Awaitable[None]], float]] = [
        ("document-sweep", sweep, float(min(3600, max(1, retention_s // 4))))
    ]
    return {"on_job_end": [job_end], "upkeep": upkeep}
