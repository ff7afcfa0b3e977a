"""A submission of many documents goes to Redis in bulk (holds and jobs in a few round trips,
QueueClient.enqueue_many) and to the ledger in two commits, with every document's outcome
what one-by-one submission gives: its own job, the earlier job for content seen before
(in Redis or earlier in the same submission), its holder, its ledger rows."""

from __future__ import annotations

import json
from typing import Any

import redis
from sqlalchemy import select

from pipeline.ledger.db import get_engine
from pipeline.ledger.models import BatchDocument, JobRow
from pipeline.queue.client import QueueClient
from pipeline.queue.record import joined
from pipeline.redis.connection import connect_redis
from pipeline.settings import get_settings
from pipeline.storage import open_store
from tasks.submission import Upload, submit_uploads
from tests.support.pdfs import make_pdf

DOCUMENTS = 200


def _count_round_trips(client: QueueClient) -> list[int]:
    """Count what `client` sends: each pipeline and each single command is one round trip."""
    sent = [0]
    real_pipeline, real_command = client.redis.pipeline, client.redis.execute_command

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        sent[0] += 1
        return real_pipeline(*args, **kwargs)

    async def command(*args: Any, **kwargs: Any) -> Any:
        sent[0] += 1
        return await real_command(*args, **kwargs)

    client.redis.pipeline = pipeline  # type: ignore[method-assign]
    client.redis.execute_command = command  # type: ignore[method-assign]
    return sent


def _ledger_rows(batch_id: str) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """(document id -> job id) of the batch's members, and (job id -> document id) of its
    job rows."""
    engine = get_engine(get_settings())
    try:
        with engine.connect() as conn:
            members = conn.execute(select(BatchDocument.document_id, BatchDocument.job_id)
                                   .where(BatchDocument.batch_id == batch_id)).all()  # fmt: skip
            jobs = conn.execute(select(JobRow.id, JobRow.document_id)
                                .where(JobRow.batch_id == batch_id)).all()  # fmt: skip
    finally:
        engine.dispose()
    return dict(members), dict(jobs)  # type: ignore[arg-type]


async def test_many_documents_go_in_a_few_round_trips_each_with_its_own_job(
    pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis
) -> None:
    client = QueueClient(connect_redis(redis_url), settings=get_settings())
    pdfs = [make_pdf(1, text=f"Letter {n}, page {{n}}.") for n in range(DOCUMENTS)]
    try:
        earlier = await submit_uploads(client, [Upload("earlier.pdf", pdfs[0])])
        sent = _count_round_trips(client)
        uploads = [Upload(f"d{n}.pdf", pdf) for n, pdf in enumerate(pdfs)]
        uploads += [Upload("again.pdf", pdfs[1]), Upload("bad.pdf", b"not a pdf")]
        sub = await submit_uploads(client, uploads)
        round_trips = sent[0]
    finally:
        await client.aclose()

    # One by one costs a few round trips per document; in bulk: holds, jobs, the two
    # duplicates' checks of their earlier runs, the budget-free batch's bookkeeping.
    assert round_trips < 40, round_trips
    first, second, *rest = sub.documents[:DOCUMENTS]
    again, bad = sub.documents[DOCUMENTS:]
    assert first.status == "duplicate" and first.job_id == earlier.documents[0].job_id
    assert all(d.status == "queued" for d in [second, *rest])
    assert again.status == "duplicate" and again.job_id == second.job_id
    assert bad.status == "skipped"
    queued = [second, *rest]
    assert len({d.job_id for d in queued}) == len(queued)

    store = open_store(get_settings())
    for doc in sub.documents[:DOCUMENTS]:
        stored = sredis.hgetall(client.keys.job(doc.job_id or ""))
        (args,) = json.loads(joined(stored, "args") or "[]")  # in pieces: queue/record.py
        assert args["sha256"] == doc.sha256
        assert "documents" not in args and "budget_usd" not in args  # kept small in Redis
        # each document's bytes are stored, held by exactly the job that answers for it
        assert store.exists(doc.sha256 or "")
        assert set(sredis.hkeys(client.keys.document(doc.sha256 or ""))) == {doc.job_id}

    members, jobs = _ledger_rows(sub.batch_id)
    assert members == {d.sha256: d.job_id for d in sub.documents[:DOCUMENTS]}
    # a job row for each run started by this batch; the duplicates answer from theirs
    assert jobs == {d.job_id: d.sha256 for d in queued}
