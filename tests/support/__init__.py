"""Helpers shared by more than one test folder; a folder's own helpers live in its conftest.py.

    servers        an ASGI app under a real uvicorn in a thread
    emulator       the Gemini emulator for a test (thread or subprocess)
    pdfs           real PDFs made on the fly
    workers        `pipeline worker` subprocesses and the fast test timings (FAST)
    waiting        `eventually`: poll a condition under a deadline
    paid_workers   worker processes that make paid calls to the emulator; the ledger's rows
    api            the HTTP API in-process (ASGI) or under uvicorn
    backends       a fresh PostgreSQL database, a TCP proxy to cut it, a Redis that refuses
    cli            `python -m pipeline ...` as a user runs it
    scripted       a provider that plays back scripted answers and failures
    s3_server      moto's S3 server in a subprocess, an S3 HTTP endpoint for boto3

Task modules, imported by worker subprocesses by their dotted name
(`pipeline worker --import tests.support.queue_tasks`): queue_tasks, llm_tasks, metrics_tasks.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository: cwd and PYTHONPATH of subprocesses
