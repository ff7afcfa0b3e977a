"""The database goes away mid-batch: nothing recorded meanwhile may be lost or counted twice.

PostgreSQL is reached through a TCP proxy the test controls; stopping it closes the listener
and every live connection, exactly what a database restart or network cut looks like.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from sqlalchemy import Engine, func, select

from pipeline.ledger import db
from pipeline.ledger.models import JobRow, LLMCall
from pipeline.ledger.recorder import SqlRecorder
from pipeline.llm.attempts import Outcome
from pipeline.redis.keys import Keys
from tests.ledger.conftest import attempt, settle
from tests.support.backends import TcpProxy

pytestmark = pytest.mark.postgres


async def _until(predicate_coro: object, timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate_coro():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_outage_buffers_then_flushes_once_in_order(
    direct_url: str, proxy: TcpProxy, proxied_engine: Engine, aredis: aioredis.Redis, keys: Keys
) -> None:
    recorder = SqlRecorder(proxied_engine, aredis, keys)
    expected: dict[str, tuple[str, Decimal]] = {}

    # before the outage: three calls recorded straight to the database
    before = [attempt(job_id=f"j{i}") for i in range(3)]
    for i, call in enumerate(before):
        await recorder.started(call)
        await recorder.settled(settle(call, Outcome.OK, f"0.00{i + 1}"))
        expected[call.attempt_id] = ("ok", Decimal(f"0.00{i + 1}"))
    in_flight = attempt(job_id="j-flight")  # started while up, settles during the outage
    await recorder.started(in_flight)
    dead_worker = attempt(job_id="j-dead", estimated="0.07")  # its worker dies mid-call
    await recorder.started(dead_worker)
    assert await recorder.buffer.length() == 0

    await proxy.stop()
    await recorder.settled(settle(in_flight, Outcome.ERROR, "0.25", error="503"))
    expected[in_flight.attempt_id] = ("error", Decimal("0.25"))
    during = [attempt(job_id=f"k{i}") for i in range(4)]
    for i, call in enumerate(during):
        await recorder.started(call)
        if i < 3:  # the last one is still in flight when the database comes back
            await recorder.settled(settle(call, Outcome.OK, "0.000000001"))
            expected[call.attempt_id] = ("ok", Decimal("0.000000001"))
    assert await recorder.mark_abandoned("j-dead") is None
    expected[dead_worker.attempt_id] = ("abandoned", Decimal("0.07"))
    await recorder.update_job_status("k0", "done", attempts=1)
    assert await recorder.buffer.length() == 4 + 3 + 1 + 1 + 1

    await proxy.start()
    # a write arriving before the flush queues behind the buffer, then drains with it
    last = during[3]
    await recorder.settled(settle(last, Outcome.RATE_LIMITED, "0"))
    expected[last.attempt_id] = ("rate_limited", Decimal(0))
    await _until(lambda: _empty(recorder))
    assert await recorder.flush() == 0  # nothing left: a second flush applies nothing

    verify = db.create_ledger_engine(direct_url, upgrade=False)
    try:
        with db.session_factory(verify)() as session:
            rows = session.scalars(select(LLMCall)).all()
            assert {r.id: (r.outcome, r.cost_usd) for r in rows} == expected
            total = session.scalar(select(func.sum(LLMCall.cost_usd)))
            assert total == sum(cost for _, cost in expected.values())
            job = session.get(JobRow, "k0")
            assert job is not None and job.status == "done" and job.attempts == 1
            # rows parked during the outage name their writer's key prefix like the others
            # (a reconciler closes only its own prefix's: pipeline/ledger/reconcile.py)
            assert {r.key_prefix for r in rows} == {job.key_prefix} == {keys.prefix}
    finally:
        verify.dispose()


async def _empty(recorder: SqlRecorder) -> bool:
    await recorder.flush()
    return await recorder.buffer.length() == 0


async def test_flusher_loop_drains_when_database_returns(
    direct_url: str, proxy: TcpProxy, proxied_engine: Engine, aredis: aioredis.Redis, keys: Keys
) -> None:
    recorder = SqlRecorder(proxied_engine, aredis, keys)
    await proxy.stop()
    calls = [attempt(job_id="f") for _ in range(5)]
    for call in calls:
        await recorder.started(call)
    assert await recorder.buffer.length() == 5

    stop = asyncio.Event()
    flusher = asyncio.create_task(recorder.run_flusher(interval_s=0.05, stop=stop))
    await proxy.start()
    try:
        await _until(lambda: _length_is(recorder, 0))
    finally:
        stop.set()
        await flusher
    verify = db.create_ledger_engine(direct_url, upgrade=False)
    try:
        with db.session_factory(verify)() as session:
            count = session.scalar(select(func.count()).select_from(LLMCall))
            assert count == 5
    finally:
        verify.dispose()


async def _length_is(recorder: SqlRecorder, n: int) -> bool:
    return await recorder.buffer.length() == n
