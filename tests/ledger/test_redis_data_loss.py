"""Redis loses its data (a server without persistence restarted, a restore, FLUSHALL): the
SQL ledger is the book of record. A worker starting afterwards rebuilds the budgets' spend
from it, so a day budget already spent stays spent (no call is paid past it), and the jobs
the ledger has as queued but Redis no longer knows are marked `lost` with the reason
instead of hanging `queued` for ever.

Real private redis-server, SQLite ledger, `pipeline worker` processes and the emulator."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.ledger.budget import Budget
from pipeline.ledger.db import create_ledger_engine
from pipeline.ledger.models import JobRow
from pipeline.ledger.reconcile import LOST_NOTE
from pipeline.queue import QueueClient
from pipeline.redis.connection import connect_redis
from pipeline.redis.keys import Keys
from pipeline.settings import load_settings
from tasks.submission import Upload, submit_uploads
from tests.support.emulator import start_emulator
from tests.support.paid_workers import enqueue_asks, ledger_calls, llm_env, wait_done, workers
from tests.support.pdfs import make_pdf
from tests.support.private_redis import PrivateRedis
from tests.support.waiting import eventually
from tests.support.workers import FAST

pytestmark = pytest.mark.slow
NANO = Decimal("1e-9")


def _job_rows(database_url: str, ids: list[str]) -> dict[str, JobRow]:
    engine = create_ledger_engine(database_url)
    try:
        with Session(engine) as session:
            rows = session.scalars(select(JobRow).where(JobRow.id.in_(ids)))
            return {r.id: r for r in rows}
    finally:
        engine.dispose()


async def test_budgets_and_jobs_come_back_from_the_ledger_after_redis_loses_its_data(
    tmp_path: Path, key_prefix: str
) -> None:
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    home = str(tmp_path / "home")
    with PrivateRedis(tmp_path / "redis") as server:  # no persistence: a restart loses all
        redis = connect_redis(server.url)
        keys = Keys(key_prefix)
        settings = load_settings(key_prefix=key_prefix, database_url=db, home=home, **FAST)
        client = QueueClient(redis, keys, settings)
        budget = Budget(redis, keys, settings)
        try:
            with start_emulator() as emu:
                env = llm_env(emu, db, home, rpm=6000, tpm=10**9)
                with workers(server.url, key_prefix, env, count=1) as procs:
                    ids = await enqueue_asks(client, 4, batch="b-loss")
                    await wait_done(client, ids, timeout_s=60, procs=procs)
                spent = sum((Decimal(str(c.cost_usd)).quantize(NANO)
                             for c in ledger_calls(db)), Decimal(0))  # fmt: skip
                assert spent > 0
                assert (await budget.status("b-loss"))["day"].spent_usd == spent
                pdfs = [Upload(f"doc-{i}.pdf", make_pdf(1, f"document {i} page {{n}}"))
                        for i in range(3)]  # fmt: skip
                submitted = await submit_uploads(client, pdfs)
                assert submitted.queued == 3

                await redis.flushall()  # the data loss
                assert (await budget.status("b-loss"))["day"].spent_usd == 0

                # Today's spend already reaches the day limit: nothing more may be paid.
                env = llm_env(emu, db, home, rpm=6000, tpm=10**9, budget_day_usd=spent,
                              reconcile_interval_s=1)  # fmt: skip
                with workers(server.url, key_prefix, env, count=1) as procs:

                    async def rebuilt() -> bool:
                        status = await budget.status("b-loss")
                        return status["day"].spent_usd == spent == status["batch"].spent_usd

                    await eventually(rebuilt, timeout_s=30, what="budgets rebuilt from the ledger")
                    sent = emu.stats()["generate_requests"]
                    (extra,) = await enqueue_asks(client, 1, batch="b-after", tag="after")

                    async def refused() -> bool:
                        return (await client.get(extra)).reason == "budget_window"

                    await eventually(refused, timeout_s=30, what="the next call held back")
                    assert emu.stats()["generate_requests"] == sent

                    async def marked() -> bool:
                        rows = _job_rows(db, submitted.job_ids)
                        return all(r.status == "lost" for r in rows.values())

                    await eventually(marked, timeout_s=30, what="forgotten jobs marked lost")
            rows = _job_rows(db, submitted.job_ids)
            assert len(rows) == 3 and all(r.last_error == LOST_NOTE for r in rows.values())
            again = await submit_uploads(client, pdfs)  # the advice in the reason works
            assert again.queued == 3
        finally:
            await redis.aclose()
