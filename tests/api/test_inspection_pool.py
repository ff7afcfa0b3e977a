"""PDF inspection for the API runs in a bounded pool of processes with a time and memory
limit per document: a ~15 KB PDF whose cross-reference stream declares two million objects
is refused with the reason, while /healthz and /costs keep answering.

The real app under uvicorn, a real Redis and SQLite, real pool processes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from tests.api.hostile_pdfs import xref_bomb
from tests.support.api import api_settings, live_server
from tests.support.pdfs import make_pdf

HOSTILE = 4
# Each read-route answer must come within this (a slow machine's worst case, not a rate).
READ_DEADLINE_S = 5.0


async def test_a_hostile_pdf_is_refused_with_a_reason_while_reads_stay_responsive(
    tmp_path: Path, redis_url: str, key_prefix: str, aredis: object
) -> None:
    settings = api_settings(tmp_path, redis_url, key_prefix, inspect_workers=2,
                            inspect_timeout_s=3.0, inspect_memory_mb=128)  # fmt: skip
    bomb = xref_bomb()
    assert len(bomb) < 20_000
    with live_server(settings) as url:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            stop = asyncio.Event()
            slowest = 0.0

            async def read_routes() -> int:
                nonlocal slowest
                answered = 0
                while not stop.is_set():
                    for path in ("/healthz", "/costs"):
                        t0 = time.monotonic()
                        r = await client.get(path, timeout=READ_DEADLINE_S)
                        slowest = max(slowest, time.monotonic() - t0)
                        assert r.status_code == 200, (path, r.text)
                        answered += 1
                    await asyncio.sleep(0.1)
                return answered

            reader = asyncio.create_task(read_routes())
            posts = [
                client.post("/analyze", files={"files": (f"bomb-{i}.pdf", bomb)})
                for i in range(HOSTILE)
            ]
            answers = await asyncio.gather(*posts)
            stop.set()
            answered = await reader
            good = await client.post("/analyze", files={"files": ("fine.pdf", make_pdf(2))})
    assert answered >= 2 and slowest < READ_DEADLINE_S
    for r in answers:  # the only file refused: nothing queued, no batch, the reason given
        assert r.status_code == 422 and r.json()["batch_id"] is None, r.text
        assert "nothing was queued" in r.json()["detail"], r.text
        (doc,) = r.json()["documents"]
        assert doc["status"] == "skipped", doc
        assert "to read" in doc["reason"] and "refused" in doc["reason"], doc["reason"]
    assert good.status_code == 202 and good.json()["documents"][0]["status"] == "queued"
