"""The database and Redis both down at once: a ledger write, and above all the record of a
paid answer, goes to the local spool under PIPELINE_HOME and is replayed, once, when the
database is back, even by another process and while Redis is still down.

Real PostgreSQL behind a TCP proxy the test cuts, and a private redis-server it kills."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from pipeline.ledger import db
from pipeline.ledger.answers import LedgerAnswers
from pipeline.ledger.models import LLMCall
from pipeline.ledger.recorder import SqlRecorder
from pipeline.ledger.spool import LocalSpool
from pipeline.llm.attempts import Outcome
from pipeline.redis.connection import connect_redis
from pipeline.redis.keys import Keys
from tests.ledger.conftest import attempt, settle
from tests.support.backends import TcpProxy
from tests.support.private_redis import PrivateRedis

pytestmark = pytest.mark.postgres


async def test_writes_neither_store_takes_are_spooled_and_replayed_once(
    tmp_path: Path, direct_url: str, proxy: TcpProxy, proxied_engine: Engine, key_prefix: str
) -> None:
    spool_dir = tmp_path / "home" / "spool"
    with PrivateRedis(tmp_path / "redis") as server:
        redis = connect_redis(server.url, retries=1)
        try:
            recorder = SqlRecorder(proxied_engine, redis, Keys(key_prefix), LocalSpool(spool_dir))
            call = attempt(job_id="j-spool")
            await recorder.started(call)  # straight to the database
            server.kill()
            await proxy.stop()  # both down now
            settled = settle(call, Outcome.OK, "0.0042", input_tokens=120, output_tokens=30)
            await recorder.settled(settled)
            await LedgerAnswers(recorder).save_answer("ck-spool", '{"text": "paid"}', "v1")
            assert len(list(spool_dir.glob("ledger-*.jsonl"))) == 1
            assert await LedgerAnswers(recorder).find_answer("ck-spool", 3600) is None

            await proxy.start()  # the database is back, Redis is not
            other = SqlRecorder(proxied_engine, redis, Keys(key_prefix), LocalSpool(spool_dir))
            assert await other.replay_spool() == 2  # any process on the home replays it
            assert list(spool_dir.glob("ledger-*.jsonl")) == []
            assert await other.replay_spool() == 0
        finally:
            await redis.aclose()
    check = db.create_ledger_engine(direct_url, upgrade=False)
    try:
        with Session(check) as session:
            rows = session.scalars(select(LLMCall).where(LLMCall.job_id == "j-spool")).all()
    finally:
        check.dispose()
    assert [(r.outcome, Decimal(str(r.cost_usd))) for r in rows] == [("ok", Decimal("0.0042"))]
    assert await LedgerAnswers(other).find_answer("ck-spool", 3600) == '{"text": "paid"}'
