"""The sample corpus in both modes: what interactive calls and Gemini Batch Mode cost, and how
long each takes, through the Gemini emulator.

    python bench/batch_mode.py [--batch-delay-s 2] [--model gemini-3.5-flash-lite] [PDF ...]

For each mode, `pipeline run examples/docs/*.pdf --mode MODE` runs as a subprocess (submit,
an in-process worker, until every document ended) against the emulator over HTTP, with its
own PIPELINE_HOME (so its own SQLite ledger and document store) and its own Redis key
prefix, so nothing is answered from the other mode's store. Cost is the sum of that ledger's
rows (Decimal, printed fixed-point), checked against the emulator's bill (interactive and
batch bills apart); wall time is the subprocess's, start-up included. The emulator ends a
batch job `--batch-delay-s` after create (Google's target is 24 h: the batch wall time here
is the pipeline's own overhead on top of that delay, not a forecast). Documents waiting in a
batch look at it every PIPELINE_BATCH_POLL_S (0.5 s here) doubling to 2 s.
Prints a table and writes bench/results/batch_mode.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

# Import from the checkout, and keep bench/ itself off the path so nothing in it shadows a module.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.common import ROOT, bench_redis_url, write_result  # noqa: E402

MODES = ("interactive", "batch")
MICRO = Decimal("0.000001")


def _ledger_cost(database_url: str) -> dict[str, Any]:
    """Rows, their cost by mode and in total, from one run's ledger."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from pipeline.ledger.db import create_ledger_engine
    from pipeline.ledger.models import LLMCall

    engine = create_ledger_engine(database_url)
    try:
        with Session(engine) as session:
            rows = list(session.scalars(select(LLMCall)))
    finally:
        engine.dispose()
    by_mode: dict[str, Decimal] = {}
    for row in rows:
        by_mode[row.mode] = by_mode.get(row.mode, Decimal(0)) + Decimal(row.cost_usd or 0)
    return {"rows": len(rows), "by_mode": by_mode,
            "total": sum(by_mode.values(), Decimal(0))}  # fmt: skip


def _run_mode(mode: str, pdfs: list[str], model: str, redis_url: str, emulator_url: str,
              api_key: str, home: Path) -> dict[str, Any]:  # fmt: skip
    import httpx

    httpx.post(f"{emulator_url}/_emulator/reset", timeout=10).raise_for_status()
    database_url = f"sqlite:///{home / 'pipeline.db'}"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PIPELINE_") and k != "GOOGLE_API_KEY"}  # fmt: skip
    env.update({
        "PYTHONPATH": str(ROOT), "PIPELINE_HOME": str(home), "PIPELINE_DATABASE_URL": database_url,
        "PIPELINE_REDIS_URL": redis_url, "PIPELINE_KEY_PREFIX": f"bench-bm-{uuid.uuid4().hex[:8]}",
        "PIPELINE_PROVIDER": "emulator", "GOOGLE_GEMINI_BASE_URL": emulator_url,
        "GEMINI_API_KEY": api_key, "PIPELINE_BATCH_POLL_S": "0.5",
        "PIPELINE_BATCH_POLL_MAX_S": "2", "COLUMNS": "160",
    })  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipeline", "run", *pdfs, "--mode", mode,
                           "--model", model], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    wall_s = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"`pipeline run --mode {mode}` failed ({done.returncode}):\n"
                         f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")  # fmt: skip
    stats = httpx.get(f"{emulator_url}/_emulator/stats", timeout=10).json()
    ledger = _ledger_cost(database_url)
    billed = Decimal(stats["billed_total"]["cost_usd"]) + Decimal(
        stats["batch"]["billed_total"]["cost_usd"])  # fmt: skip
    if abs(ledger["total"] - billed) > MICRO:
        raise SystemExit(f"{mode}: the ledger booked ${ledger['total']:f}, the emulator "
                         f"billed ${billed:f}")  # fmt: skip
    return {
        "mode": mode,
        "documents": len(pdfs),
        "wall_s": round(wall_s, 2),
        "cost_usd": f"{ledger['total']:.6f}",
        "cost_by_ledger_mode_usd": {k: f"{v:.6f}" for k, v in sorted(ledger["by_mode"].items())},
        "emulator_billed_usd": f"{billed:.6f}",
        "ledger_rows": ledger["rows"],
        "generate_requests": stats["generate_requests"],
        "batch_jobs": stats["batch"]["jobs_created"],
        "batch_requests": stats["batch"]["requests"],
        "input_tokens": stats["billed_total"]["input_tokens"]
        + stats["batch"]["billed_total"]["input_tokens"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pdfs", nargs="*", help="default: examples/docs/*.pdf")
    parser.add_argument("--batch-delay-s", type=float, default=2.0,
                        help="seconds from batches.create to SUCCEEDED in the emulator")
    parser.add_argument("--model", default="gemini-3.5-flash-lite")
    args = parser.parse_args()
    pdfs = args.pdfs or sorted(str(p.relative_to(ROOT))
                               for p in (ROOT / "examples" / "docs").glob("*.pdf"))  # fmt: skip

    from pipeline.llm.emulator.app import EmulatorConfig, create_emulator_app
    from tests.support.servers import uvicorn_in_thread

    redis_url, server = bench_redis_url()
    app = create_emulator_app(EmulatorConfig(batch_delay_s=args.batch_delay_s))
    runs: list[dict[str, Any]] = []
    try:
        with uvicorn_in_thread(app, lifespan="off", what="Gemini emulator") as emulator_url, \
                tempfile.TemporaryDirectory(prefix="bench-batch-mode-") as tmp:  # fmt: skip
            for mode in MODES:
                home = Path(tmp) / mode
                home.mkdir()
                runs.append(_run_mode(mode, pdfs, args.model, redis_url, emulator_url,
                                      "emulator-key", home))  # fmt: skip
    finally:
        if server is not None:
            server.stop()
    interactive, batch = (Decimal(r["cost_usd"]) for r in runs)
    saved = interactive - batch
    print(f"{len(pdfs)} documents, model {args.model}, emulator batch delay "
          f"{args.batch_delay_s:g} s")  # fmt: skip
    print(f"{'mode':<12} {'cost USD':>12} {'wall s':>8} {'calls':>6} {'batch jobs':>10}")
    for r in runs:
        print(f"{r['mode']:<12} {r['cost_usd']:>12} {r['wall_s']:>8.2f} "
              f"{r['generate_requests']:>6} {r['batch_jobs']:>10}")  # fmt: skip
    share = f"{saved / interactive:.0%}" if interactive else "n/a"
    print(f"Batch Mode saved ${saved:.6f} ({share}) of the interactive cost")
    load = [round(x, 2) for x in os.getloadavg()]  # a shared machine: say how busy it was
    print(f"load average at the end: {load}")
    path = write_result("batch_mode", {
        "model": args.model, "batch_delay_s": args.batch_delay_s, "documents": pdfs,
        "runs": runs, "saved_usd": f"{saved:.6f}", "load_average_end": load})  # fmt: skip
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
