"""What every view says a Batch Mode batch cost, through a real worker, Redis, the ledger
(SQLite and PostgreSQL), the real google-genai client and the emulator.

While documents wait inside a Gemini batch job, their requests' worst case is *held*, never
*spent*: the batch's spend is $0 and its held amount is each request's worst case once, per
document and per batch, in `GET /batches/{id}` (batch_view), `GET /batches` (recent_batches),
the dashboard, `pipeline status` (text and --json), the budget PATCH answer and `pipeline
costs` alike, and a reconcile pass meanwhile does not turn the holds into spend. Once the job
is booked, the spend is the emulator's bill and each document's cost, its job's cost and calls
(`GET /jobs/{id}`) and its run's call count (`pipeline results`) are its own requests', not
the job's that happened to collect the batch."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from pipeline.ledger.models import LLMCall
from pipeline.money import dollars
from pipeline.queue.job import State
from tasks.submission import Upload, submit_uploads
from tests.ledger.conftest import BACKENDS, database_url_for
from tests.support.cli import run_cli
from tests.support.emulator import start_emulator
from tests.support.paid_rig import FAST_BATCH_POLL, Rig, money, running_pipeline
from tests.support.pdfs import make_pdf
from tests.support.waiting import eventually

BUDGET = Decimal("0.5")


@pytest.fixture(params=BACKENDS)
def ledger(request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str | None,
           pipeline_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The ledger on each backend, named by PIPELINE_DATABASE_URL for the worker and CLI."""
    with database_url_for(request.param, tmp_path, postgres_url) as url:
        monkeypatch.setenv("PIPELINE_DATABASE_URL", url)
        pipeline_env["PIPELINE_DATABASE_URL"] = url
        from pipeline.settings import get_settings

        get_settings.cache_clear()
        yield url


def _docs() -> list[Upload]:
    # Two documents of different lengths: different worst cases, so a hold counted on the
    # wrong document (or twice) shows.
    return [Upload("invoice.pdf", make_pdf(1, "Invoice 7. Globex owes Initech $40.")),
            Upload("letter.pdf", make_pdf(2, "Letter. Umbrella thanks Hooli for the "
                                             "partnership and its long report."))]  # fmt: skip


async def _cli(env: dict[str, str], *args: str) -> str:
    """`pipeline ARGS`' output, run in a thread: the worker shares this event loop."""
    out = await asyncio.to_thread(run_cli, env, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _batch_rows(rig: Rig) -> dict[str, LLMCall]:
    """The Batch Mode rows by document id (one request per one-page document)."""
    rows = [r for r in rig.calls() if r.mode == "batch"]
    by_doc = {str(r.document_id): r for r in rows}
    assert len(by_doc) == len(rows), rows
    return by_doc


async def _views(rig: Rig, env: dict[str, str], batch_id: str) -> dict[str, Any]:
    """What each view says of the batch's money now."""
    from pipeline.api.dashboard.state import dashboard_state
    from tasks.batches import batch_view, recent_batches
    from tasks.control import set_budget

    engine = rig.services.engine
    view = (await batch_view(rig.client, engine, batch_id)).as_json()
    (listed,) = [b for b in recent_batches(engine) if b["batch_id"] == batch_id]
    board = await dashboard_state(rig.client, engine, rig.services.budget)
    (row,) = [b for b in board["batches"] if b["id"] == batch_id]
    patched = await set_budget(rig.client, rig.services.recorder, engine, batch_id, BUDGET)
    status_json = json.loads(await _cli(env, "status", batch_id, "--json"))
    status_text = await _cli(env, "status", batch_id)
    overview = json.loads(await _cli(env, "status", "--json"))
    (in_overview,) = [b for b in overview["batches"] if b["batch_id"] == batch_id]
    costs = json.loads(await _cli(env, "costs", "--by", "batch", "--format", "json"))
    (by_batch,) = [r for r in costs["rows"] if r["key"] == batch_id]
    return {"view": view, "listed": listed, "board": row, "patched": patched,
            "status_json": status_json, "status_text": status_text, "overview": in_overview,
            "costs": by_batch}  # fmt: skip


def _assert_every_view(seen: dict[str, Any], spent: Decimal, held: Decimal,
                       docs: dict[str, tuple[Decimal, Decimal]]) -> None:
    """Every view says `spent` and `held` for the batch, and (cost, held) for each document
    by id."""
    s, h = money(spent), money(held)
    for name in ("view", "status_json"):
        shown = seen[name]
        assert (money(shown["spend_usd"]), money(shown["held_usd"])) == (s, h), (name, shown)
        got = {d["document_id"]: (money(d["cost_usd"]), money(d["held_usd"]))
               for d in shown["documents"]}  # fmt: skip
        assert got == {k: (money(c), money(x)) for k, (c, x) in docs.items()}, (name, got)
    for name in ("listed", "overview"):
        assert money(seen[name]["spend_usd"]) == s, (name, seen[name])
        assert money(seen[name]["held_usd"]) == h, (name, seen[name])
    board = seen["board"]
    assert (money(board["spent_usd"]), money(board["held_usd"])) == (s, h), board
    assert Decimal(board["budget_used"]) == (s / BUDGET).quantize(Decimal("0.0001")), board
    assert money(seen["patched"]["spend_usd"]) == s, seen["patched"]
    costs = seen["costs"]
    assert (money(costs["cost_usd"]), money(costs["in_flight_usd"])) == (s, h), costs
    header = seen["status_text"].splitlines()[0]
    assert f"spent {dollars(s)} of $" in header, header
    if h:
        assert f"{dollars(h)} held for calls in flight (not spent yet)" in header, header
    else:
        assert "held" not in header, header


async def test_a_batch_waiting_in_a_gemini_batch_job_is_held_not_spent_in_every_view(
    ledger: str, pipeline_env: dict[str, str], redis_url: str, key_prefix: str,
) -> None:  # fmt: skip
    from pipeline.api.views import ledger_job
    from pipeline.ledger.reconcile import STALE_STARTED_S
    from pipeline.services import _reconciler
    from tasks.batches import batch_view
    from tasks.export import results_of

    with start_emulator(batch_delay_s=3600) as emu:  # ended by the test (finish_batch)
        async with running_pipeline(emu, redis_url, key_prefix, **FAST_BATCH_POLL) as rig:
            sub = await submit_uploads(rig.client, _docs(), mode="batch", budget_usd=BUDGET,
                                       services=rig.services)  # fmt: skip
            assert sub.batch_id is not None
            batch_id = sub.batch_id
            job_of = {d.document_id: d.job_id for d in sub.documents}

            async def in_batch() -> str | None:
                view = await batch_view(rig.client, rig.services.engine, batch_id)
                reasons = [d.state.reason or "" for d in view.documents]
                inside = [r for r in reasons if r.startswith("in Gemini batch batches/")]
                return inside[0].split()[3].rstrip(",") if len(inside) == 2 else None

            remote = await eventually(in_batch, 90, "both documents to wait in the batch")
            await rig.services.recorder.flush()
            rows = _batch_rows(rig)
            assert {r.outcome for r in rows.values()} == {"started"}, rows
            worst = {d: money(r.cost_usd) for d, r in rows.items()}
            assert len(set(worst.values())) == 2, worst  # the documents' worst cases differ
            total = sum(worst.values(), Decimal(0))
            waiting = {d: (Decimal(0), w) for d, w in worst.items()}
            _assert_every_view(await _views(rig, pipeline_env, batch_id), Decimal(0), total,
                               waiting)  # fmt: skip
            # Each request waits under its own document's job (GET /jobs/{id}), not the one
            # that submitted the group.
            with Session(rig.services.engine) as session:
                for doc, job_id in job_of.items():
                    assert rows[doc].job_id == job_id, (doc, rows[doc].job_id, job_of)
                    _, cost = ledger_job(session, str(job_id))
                    assert (money(cost["cost_usd"]), money(cost["held_usd"]),
                            cost["in_flight_calls"]) == (0, worst[doc], 1), (doc, cost)
            # A reconcile pass while the job waits, once it would take the rows for stale:
            # the requests are not lost, only waiting.
            async def stale() -> bool:
                return all(datetime.now(UTC) - r.started_at.replace(tzinfo=UTC)
                           > timedelta(seconds=STALE_STARTED_S) for r in rows.values())

            await eventually(stale, 60, "the started rows to be old enough to reconcile")
            await _reconciler(rig.services).run(force=True)
            await rig.services.recorder.flush()
            assert {r.outcome for r in _batch_rows(rig).values()} == {"started"}
            _assert_every_view(await _views(rig, pipeline_env, batch_id), Decimal(0), total,
                               waiting)  # fmt: skip

            emu.finish_batch(remote)
            jobs = [await rig.finished(j, timeout_s=90) for j in sub.job_ids]
            assert all(j.state == State.COMPLETE for j in jobs), [j.error for j in jobs]
            rows = _batch_rows(rig)
            billed = money(emu.stats()["batch"]["billed_total"]["cost_usd"])
            booked = {d: money(r.cost_usd) for d, r in rows.items()}
            assert sum(booked.values(), Decimal(0)) == billed > 0
            done = {d: (c, Decimal(0)) for d, c in booked.items()}
            _assert_every_view(await _views(rig, pipeline_env, batch_id), billed, Decimal(0),
                               done)  # fmt: skip

            # Each document's request is its own job's: GET /jobs/{id}, `pipeline results`.
            with Session(rig.services.engine) as session:
                for doc, job_id in job_of.items():
                    assert rows[doc].job_id == job_id, (doc, rows[doc].job_id, job_of)
                    _, cost = ledger_job(session, str(job_id))
                    assert money(cost["cost_usd"]) == booked[doc], (doc, cost)
                    # its batch request and the call answered from the store, no other's
                    assert cost["calls"] == 2, (doc, cost)
            results = results_of(await batch_view(rig.client, rig.services.engine, batch_id))
            assert {r["document_id"]: r["calls"] for r in results} == dict.fromkeys(job_of, 2)
