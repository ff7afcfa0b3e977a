"""The submitting process of bench/documents.py, run as its own process so its memory is
its own: `python -m bench.documents_submit PATH...` with PIPELINE_* set by the parent.

It does what `pipeline submit PATH...` does (collect the files, `submit_uploads`, the same
ledger and store), and prints one JSON line: {"documents", "queued", "skipped", "read_s",
"submit_s", "batch_id", "peak_rss_mb"} (peak RSS is the kernel's VmHWM of this process).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.common import rss_mb  # noqa: E402


async def _main(paths: list[str]) -> dict[str, object]:
    from pipeline.cli.submit import collect_uploads
    from pipeline.queue.client import QueueClient
    from tasks.submission import submit_uploads

    t0 = time.perf_counter()
    uploads, skipped = collect_uploads(paths)
    read_s = time.perf_counter() - t0
    client = await QueueClient.connect()
    try:
        t1 = time.perf_counter()
        sub = await submit_uploads(client, uploads)
        submit_s = time.perf_counter() - t1
    finally:
        await client.aclose()
    return {"documents": len(uploads), "queued": sub.queued,
            "skipped": len(skipped) + sum(d.status == "skipped" for d in sub.documents),
            "read_s": round(read_s, 3), "submit_s": round(submit_s, 3),
            "batch_id": sub.batch_id}  # fmt: skip


if __name__ == "__main__":
    out = asyncio.run(_main(sys.argv[1:]))
    import os

    out["peak_rss_mb"] = round(rss_mb(os.getpid(), "VmHWM"), 1)
    print(json.dumps(out), flush=True)
