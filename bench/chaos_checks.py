"""What the chaos run proves, read back from Redis, the ledger and the emulator's bills.

Each check is a number that must be 0 (or a bound that must hold), computed from the
three independent records of what happened: the queue (job states and its event stream),
the SQL ledger (one row per call attempt), and the emulator (one bill per 200 answer).
A worker killed mid-call can leave a bill the ledger never saw as `ok`; those must each be
covered by an `abandoned` row, costed at its reserved worst case.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bench.chaos_env import Bill
from pipeline.queue.client import QueueClient

TERMINAL_OK = "complete"


@dataclass
class Evidence:
    """Everything read at the end of the run."""

    jobs: dict[str, dict[str, Any]]  # job id -> {state, error, document}
    complete_events: Counter[str]  # job id -> how many `complete` events it emitted
    calls: list[dict[str, Any]]  # ledger llm_calls rows
    results: Counter[str]  # document id -> result rows
    bills: list[Bill]
    emulator: dict[str, Any]  # GET /_emulator/stats


async def read_queue(
    client: QueueClient, job_docs: dict[str, str]
) -> tuple[dict[str, dict[str, Any]], Counter[str]]:
    jobs: dict[str, dict[str, Any]] = {}
    for job_id, doc in job_docs.items():
        state, error = await client.redis.hmget(client.keys.job(job_id), ["state", "error"])
        jobs[job_id] = {"state": state or "missing", "error": error or "", "document": doc}
    completes: Counter[str] = Counter()
    cursor = "-"
    while True:
        entries = await client.redis.xrange(client.keys.events, min=cursor, count=5000)
        if cursor != "-" and entries and entries[0][0] == cursor:
            entries = entries[1:]
        if not entries:
            break
        for stream_id, fields in entries:
            cursor = stream_id
            if fields.get("state") == TERMINAL_OK and fields.get("job") in job_docs:
                completes[fields["job"]] += 1
    return jobs, completes


def read_ledger(database_url: str, batch_id: str) -> tuple[list[dict[str, Any]], Counter[str]]:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from pipeline.ledger.db import create_ledger_engine
    from pipeline.ledger.models import LLMCall, Result

    engine = create_ledger_engine(database_url, upgrade=False)
    try:
        with Session(engine) as session:
            rows = session.scalars(select(LLMCall).where(LLMCall.batch_id == batch_id)).all()
            calls = [
                {c.name: getattr(r, c.name) for c in LLMCall.__table__.columns} for r in rows
            ]
            results = Counter(session.scalars(select(Result.document_id)).all())
    finally:
        engine.dispose()
    return calls, results


def _sum(rows: list[Any], field: str) -> int:
    return sum(int(r[field] if isinstance(r, dict) else getattr(r, field)) for r in rows)


def check(ev: Evidence, budget_usd: Decimal) -> dict[str, Any]:
    """The figures and the verdict: `failures` lists every check that did not hold."""
    from pipeline.llm.pricing import PriceTable
    from pipeline.llm.provider import Usage

    prices = PriceTable.load()
    now = datetime.now(UTC)
    failures: list[str] = []

    # Documents: none lost, none without a reason, none completed twice.
    states = Counter(j["state"] for j in ev.jobs.values())
    # `lost`: Redis forgot the job (data loss) and the ledger marked it so, with the reason.
    lost = [i for i, j in ev.jobs.items() if j["state"] not in
            ("complete", "failed", "dead", "cancelled", "over_budget", "lost")]  # fmt: skip
    no_reason = [i for i, j in ev.jobs.items()
                 if j["state"] != "complete" and not j["error"] and i not in lost]  # fmt: skip
    twice_queue = [i for i, n in ev.complete_events.items() if n > 1]
    complete_docs = {j["document"] for j in ev.jobs.values() if j["state"] == "complete"}
    no_result = [d for d in complete_docs if ev.results[d] == 0]
    twice_ledger = [d for d, n in ev.results.items() if n > 1]

    # Calls: paid once per call key in the ledger; bills matched to `ok` rows.
    outcomes = Counter(c["outcome"] for c in ev.calls)
    ok = [c for c in ev.calls if c["outcome"] == "ok"]
    abandoned = [c for c in ev.calls if c["outcome"] == "abandoned"]
    ok_per_key = Counter(c["call_key"] for c in ok)
    paid_twice_ledger = sorted(k for k, n in ok_per_key.items() if n > 1)
    ledger_bills = Counter((c["model_version"], c["input_tokens"], c["output_tokens"],
                            c["thinking_tokens"]) for c in ok)  # fmt: skip
    emulator_bills = Counter(b.tokens for b in ev.bills)
    ok_without_bill = ledger_bills - emulator_bills
    billed_not_ok = emulator_bills - ledger_bills  # answered to a worker that was killed
    unrecorded = list(billed_not_ok.elements())

    def cost(model_version: str, i: int, o: int, t: int) -> Decimal:
        return prices.cost(model_version, Usage(i, o, t), now)

    ok_cost = sum((Decimal(c["cost_usd"]) for c in ok), Decimal(0))
    ok_cost_repriced = sum((cost(*k) for k in ledger_bills.elements()), Decimal(0))
    billed_cost = sum((cost(*b.tokens) for b in ev.bills), Decimal(0))
    unrecorded_cost = sum((cost(*k) for k in unrecorded), Decimal(0))
    abandoned_cost = sum((Decimal(c["cost_usd"]) for c in abandoned), Decimal(0))
    ledger_cost = sum((Decimal(c["cost_usd"] or 0) for c in ev.calls), Decimal(0))
    stats_billed = ev.emulator.get("billed", {})
    fields = ("requests", "input_tokens", "output_tokens", "thinking_tokens")
    stats_tokens = {f: sum(int(r[f]) for r in stats_billed.values()) for f in fields}
    log_tokens = {"requests": len(ev.bills), "input_tokens": _sum(ev.bills, "input_tokens"),
                  "output_tokens": _sum(ev.bills, "output_tokens"),
                  "thinking_tokens": _sum(ev.bills, "thinking_tokens")}  # fmt: skip
    ledger_tokens = {"requests": len(ok), "input_tokens": _sum(ok, "input_tokens"),
                     "output_tokens": _sum(ok, "output_tokens"),
                     "thinking_tokens": _sum(ok, "thinking_tokens")}  # fmt: skip
    repeats = int(ev.emulator.get("billed_repeats", 0))

    def expect(ok_: bool, message: str) -> None:
        if not ok_:
            failures.append(message)

    expect(not lost, f"{len(lost)} documents lost (not terminal): {lost[:5]}")
    expect(not no_reason, f"{len(no_reason)} documents failed without a reason: {no_reason[:5]}")
    expect(not twice_queue, f"{len(twice_queue)} jobs completed twice in the queue")
    expect(not twice_ledger, f"{len(twice_ledger)} documents with two ledger results")
    expect(not no_result, f"{len(no_result)} complete documents without a ledger result")
    expect(not paid_twice_ledger, f"{len(paid_twice_ledger)} call keys paid twice (ok rows)")
    expect(outcomes.get("started", 0) == 0, f"{outcomes.get('started')} calls still `started`")
    expect(not ok_without_bill, f"ledger `ok` rows without an emulator bill: {ok_without_bill}")
    expect(stats_tokens == log_tokens, f"bill log {log_tokens} != emulator stats {stats_tokens}")
    expect(len(unrecorded) <= len(abandoned),
           f"{len(unrecorded)} bills missing in the ledger, {len(abandoned)} abandoned")
    expect(repeats <= len(abandoned),
           f"emulator billed_repeats {repeats} > abandoned rows {len(abandoned)}")  # fmt: skip
    expect(ok_cost == ok_cost_repriced, f"ledger ok cost {ok_cost} != repriced {ok_cost_repriced}")
    expect(unrecorded_cost <= abandoned_cost,
           f"bills of killed calls ${unrecorded_cost} > abandoned ${abandoned_cost}")  # fmt: skip
    expect(ledger_cost <= budget_usd, f"ledger spend {ledger_cost} > budget {budget_usd}")
    expect(billed_cost <= budget_usd, f"emulator billed {billed_cost} > budget {budget_usd}")

    return {
        "documents": len(ev.jobs),
        "job_states": dict(states),
        "documents_lost": len(lost),
        "documents_failed_without_reason": len(no_reason),
        "documents_completed_twice": len(set(twice_queue)) + len(twice_ledger),
        "failure_reasons": sorted({j["error"][:120] for j in ev.jobs.values()
                                   if j["state"] != "complete" and j["error"]})[:10],
        "ledger_outcomes": dict(outcomes),
        "call_keys_paid_twice": len(paid_twice_ledger),
        "emulator": {
            "generate_requests": ev.emulator.get("generate_requests"),
            "by_status": ev.emulator.get("by_status"),
            "repeats": ev.emulator.get("repeats"),
            "billed_repeats": repeats,
            "billed": log_tokens,
            "billed_cost_usd": str(billed_cost),
        },
        "ledger_ok": {**ledger_tokens, "cost_usd": str(ok_cost)},
        "billed_to_killed_workers": {
            "requests": len(unrecorded),
            "input_tokens": sum(k[1] for k in unrecorded),
            "output_tokens": sum(k[2] for k in unrecorded),
            "thinking_tokens": sum(k[3] for k in unrecorded),
            "cost_usd": str(unrecorded_cost),
        },
        "abandoned_rows": len(abandoned),
        "abandoned_cost_usd": str(abandoned_cost),
        "ledger_spend_usd": str(ledger_cost),
        "budget_usd": str(budget_usd),
        "failures": failures,
    }
