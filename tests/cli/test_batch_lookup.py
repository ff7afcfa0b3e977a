"""A batch named by a short or shared id prefix, or by a label several batches carry: every
command that takes a batch says so, and which it took. The real CLI against Redis and a
SQLite ledger (batches made by the recorder, so their ids can share a prefix)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
import redis

from pipeline.ledger.db import get_engine
from pipeline.ledger.recorder import SqlRecorder
from pipeline.redis.connection import connect_redis
from pipeline.redis.keys import Keys
from pipeline.settings import load_settings
from tests.support.cli import run_cli

E5A = "e5a0" + "0" * 28
E5B = "e5b0" + "0" * 28
NU_OLD = "aa11" + "1" * 28
NU_NEW = "bb22" + "2" * 28


async def _batches(redis_url: str, prefix: str) -> None:
    client = connect_redis(redis_url)
    engine = get_engine(load_settings(key_prefix=prefix))
    try:
        recorder = SqlRecorder(engine, client, Keys(prefix))
        for batch_id, label in ((E5A, None), (E5B, None), (NU_OLD, "nu1")):
            await recorder.upsert_batch(batch_id, label=label, budget_usd=Decimal("1"))
        await asyncio.sleep(0.02)  # the newer one is created later
        await recorder.upsert_batch(NU_NEW, label="nu1", budget_usd=Decimal("1"))
    finally:
        engine.dispose()
        await client.aclose()


@pytest.fixture
async def batches(pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis) -> None:
    await _batches(redis_url, pipeline_env["PIPELINE_KEY_PREFIX"])


@pytest.mark.usefixtures("batches")
def test_a_short_or_shared_prefix_is_ambiguous_and_lists_the_candidates(
    pipeline_env: dict[str, str],
) -> None:
    for args in (("status", "e5"), ("status", "e5a"), ("results", "e5"), ("cancel", "e5"),
                 ("retry", "e5"), ("budget", "e5", "--set", "2")):  # fmt: skip
        r = run_cli(pipeline_env, *args)
        assert r.returncode == 1, (args, r.stdout)
        assert "no batch" not in r.stderr, args
        if args[1] == "e5":  # two start with it; with e5a, one, but 3 characters name none
            assert E5A in r.stderr and E5B in r.stderr, (args, r.stderr)
        assert E5A in r.stderr and "4 or more characters" in r.stderr, (args, r.stderr)
    shared = run_cli(pipeline_env, "status", "e5a0", "--json")
    assert shared.returncode == 0, shared.stderr  # a unique prefix of 4 still names it


@pytest.mark.usefixtures("batches")
def test_a_label_several_batches_carry_says_which_is_taken_and_how_to_pick_another(
    pipeline_env: dict[str, str],
) -> None:
    status = run_cli(pipeline_env, "status", "nu1", "--json")
    assert status.returncode == 0, status.stderr
    assert NU_NEW in status.stdout  # the newest, as before
    assert "names 2 batches" in status.stderr and NU_OLD in status.stderr
    assert "to pick another" in status.stderr
    r = run_cli(pipeline_env, "results", "nu1", "--format", "csv")
    assert r.returncode == 0 and "names 2 batches" in r.stderr and NU_OLD in r.stderr, r.stderr
    # a command that changes a batch takes no guess at which one a shared label meant
    for args in (("budget", "nu1", "--set", "2"), ("retry", "nu1"), ("cancel", "nu1")):
        r = run_cli(pipeline_env, *args)
        assert r.returncode == 1, (args, r.stdout)
        assert r.stderr.startswith("error: label 'nu1' names 2 batches"), (args, r.stderr)
        assert NU_OLD in r.stderr and NU_NEW in r.stderr and "give its id" in r.stderr
        assert "Traceback" not in r.stderr
    assert run_cli(pipeline_env, "cancel", NU_NEW[:12]).returncode == 0  # by id, it acts
    alone = run_cli(pipeline_env, "status", NU_OLD[:12])
    assert alone.returncode == 0 and "note:" not in alone.stderr
