"""Taking documents out of a Gemini batch job: at their deadline (finished interactively) or
when they are cancelled (`pipeline cancel`, the API's cancel routes).

Who answers a document of a batch group is decided once, per document (all the parts of a
long PDF together), by whoever writes `use:<sha256>` in the group's Redis record first
(HSETNX): the collect that stores the batch's answer ("batch", pipeline/llm/batch_group.py)
or the document leaving ("interactive" at its deadline, "cancelled"). So:
- a document that left is never answered from the batch: if its request is answered anyway
  (Google ran it before the cancel, or other documents kept the job alive), the answer is
  booked at its batch price (outcome `abandoned`: billed, not used) and never stored;
- a document whose batch answer was claimed first does not leave: it waits a moment for the
  answer to be stored and uses it (paid once, at the batch price).

When every request of a group has left, the remote job is cancelled (requests Google has not
run are not billed) and a `collect_batch_group` job (tasks/batch_mode.py) books what the
job did answer once it ends, settles the group's budget holds and turns its ledger rows from
`started` into what was billed: no member is left to look at it. That job holds the members'
PDFs in the document store (their requests are rebuilt to read the answers) until it ends.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from pipeline.llm.batch_group import USE, candidates
from pipeline.llm.failure import ProviderCallError

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from pipeline.llm.batch import GeminiBatches
    from pipeline.queue.client import QueueClient
    from pipeline.redis.keys import Keys

log = logging.getLogger(__name__)

FALLBACK = "interactive"  # a document finished interactively at its deadline
CANCELLED = "cancelled"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def leave(redis: Redis, keys: Keys, name: str, key: str, why: str,
                retention_s: int) -> bool:  # fmt: skip
    """Take document `key` (its sha256, and so every part of it) out of group `name`
    (`why`: FALLBACK or CANCELLED). False when the batch's answer was claimed first: it is
    being stored, and the document should use it. The document's PDF is held for the
    group's collect first (its own job lets go of it when it ends, maybe before the batch
    does); the first booking of the group lets go of it (`release_for_collect`)."""
    from pipeline.storage.holds import hold

    await hold(redis, keys, [collect_job_id(name)], key, retention_s)
    group = keys.batch_group(name)
    if await redis.hsetnx(group, USE + key, why):
        return True
    return _text(await redis.hget(group, USE + key) or "batch") != "batch"


async def left_keys(redis: Redis, keys: Keys, name: str) -> dict[str, str]:
    """The group's documents that left, sha256 -> why."""
    raw = {_text(k): _text(v) for k, v in (await redis.hgetall(keys.batch_group(name))).items()}
    return {k[len(USE):]: v for k, v in raw.items() if k.startswith(USE) and v != "batch"}


async def all_left(redis: Redis, keys: Keys, name: str) -> bool:
    """Whether every document the group's remote job was built from has left it (a request
    key is a sha256, or `sha256:first-last` for a part of one)."""
    members = await redis.hget(keys.batch_group(name), "keys")
    wanted = {k.split(":", 1)[0] for k in json.loads(_text(members))} if members else set()
    gone = await left_keys(redis, keys, name)
    return bool(wanted) and all(k in gone for k in wanted)


async def cancel_if_abandoned(
    client: QueueClient, batches: GeminiBatches | None, args: dict[str, Any],
    batch_id: str | None,
) -> str | None:  # fmt: skip
    """Once every request of the group in `args` (a member's job arguments) has left: cancel
    its remote job and queue the collect that books what it answered. Returns the remote
    job's name when it was asked to cancel, else None. A failed cancel is logged: the
    collect books the job however it ends."""
    redis, keys = client.redis, client.keys
    name = str(args["batch_group"]["name"])
    if not await all_left(redis, keys, name):
        return None
    record = {_text(k): _text(v) for k, v in (await redis.hgetall(keys.batch_group(name))).items()}
    remote = record.get("remote")
    if not remote or record.get("booked"):
        # Never created (its members left first), or already booked: no collect is needed.
        await release_for_collect(client, name, member_documents(record, args))
        return None
    if batches is not None:
        try:
            await batches.cancel(remote)
        except ProviderCallError as exc:
            log.warning("batch group %s: cancelling %s failed (%s); its answers are booked "
                        "when it ends", name, remote, exc)  # fmt: skip
    await queue_collect(client, args, batch_id, member_documents(record, args))
    return remote


def member_documents(record: dict[str, str], args: dict[str, Any]) -> list[str]:
    """The documents (sha256) grouped in the group of `args` (a member's or its collect's job
    arguments): its record's candidates, else (a job queued before the record kept them)
    its arguments' members."""
    return [str(m["sha256"]) for m in candidates(record, args["batch_group"])]


async def release_for_collect(client: QueueClient, name: str, documents: list[str]) -> None:
    """The group `name` is booked: no collect needs its members' PDFs (`documents`, sha256)
    any more."""
    import asyncio

    from pipeline.storage import open_store
    from pipeline.storage.holds import release

    store = await asyncio.to_thread(open_store, client.settings)
    await release(client.redis, client.keys, store, collect_job_id(name), documents)


def collect_job_id(name: str) -> str:
    """The one collect job of a group: the same id however many callers queue it."""
    return "collect-" + name


async def queue_collect(client: QueueClient, args: dict[str, Any], batch_id: str | None,
                        shas: list[str]) -> str:  # fmt: skip
    """Queue `collect_batch_group` for the group in `args`, holding its members' PDFs
    (`shas`, `member_documents`) first (held before the enqueue, as a submission does, so
    none is deleted meanwhile). The collect's arguments carry the group as `args` do (its
    name; the members too for a group from before its record kept them)."""
    from pipeline.queue.job import JobOptions
    from pipeline.storage.holds import hold
    from tasks.batch_mode import collect_batch_group

    group = args["batch_group"]
    job_id = collect_job_id(str(group["name"]))
    for sha in shas:
        await hold(client.redis, client.keys, [job_id], sha,
                   client.settings.document_retention_s)  # fmt: skip
    collect_args = {"model": args["model"], "prompt_version": args.get("prompt_version"),
                    "budget_usd": args.get("budget_usd"), "batch_group": group,
                    "documents": shas}  # fmt: skip
    handle = await client.enqueue(collect_batch_group, collect_args, _options=JobOptions(
        job_id=job_id, idempotency_key=job_id, batch=batch_id))  # fmt: skip
    return handle.id
