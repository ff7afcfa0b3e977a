"""The live view on a terminal: elapsed time, ETA, spend rate and each unfinished document's
stage, frame by frame, while an in-process worker analyses three PDFs through google-genai
against the emulator. Real Redis and SQLite."""

from __future__ import annotations

import asyncio
import io
import re

import redis
from rich.console import Console

from pipeline.cli.follow import follow
from pipeline.queue.client import QueueClient
from pipeline.redis.connection import connect_redis
from pipeline.services import build_worker, open_services
from pipeline.settings import get_settings
from tasks.submission import Upload, submit_uploads
from tests.support.emulator import start_emulator
from tests.support.pdfs import make_pdf


async def test_live_view_shows_elapsed_eta_spend_rate_and_stages(
    pipeline_env: dict[str, str], redis_url: str, sredis: redis.Redis,
    monkeypatch: object,
) -> None:  # fmt: skip
    import tasks.analyze  # noqa: F401  (registers the tasks)

    with start_emulator(latency_s=(1.2, 1.2)) as emu:
        for name, value in {**emu.env, "GOOGLE_API_KEY": ""}.items():
            monkeypatch.setenv(name, value)  # type: ignore[attr-defined]
        get_settings.cache_clear()
        client = QueueClient(connect_redis(redis_url), settings=get_settings())
        services = await open_services(client)
        try:
            since = await client.last_event_id()
            uploads = [Upload(f"report-{i}.pdf", make_pdf(1, f"Report {i}, page {{n}}."))
                       for i in range(3)]  # fmt: skip
            sub = await submit_uploads(client, uploads, services=services, label="live")
            worker = await build_worker(client, queues=["default"], concurrency=1,
                                        services=services)  # fmt: skip
            run = asyncio.create_task(worker.run(install_signals=False))
            screen = io.StringIO()
            terminal = Console(file=screen, force_terminal=True, width=160)
            try:
                tracker = await follow(client, sub.batch_id, since, terminal,
                                       engine=services.engine)  # fmt: skip
            finally:
                worker.stop()
                await asyncio.wait_for(run, 30)
        finally:
            await services.aclose()
            await client.aclose()
    frames = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())
    assert tracker.finished and tracker.counts()["complete"] == 3
    assert "elapsed" in frames and "ETA " in frames
    assert re.search(r"spent \$0\.\d{9} \(\$0\.\d{9}/min\)", frames), frames[-2000:]
    assert re.search(r"report-\d\.pdf\s+running\s+analysing 1 page\b", frames), frames[-2000:]
    assert "3 done" in frames
