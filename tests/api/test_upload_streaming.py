"""Uploads through python-multipart's streaming parser: RFC 5987 `filename*` names (field case
17), NUL bytes refused, each file spooled to a temporary file while it arrives, and the bytes
the API receives at once bounded (503 with Retry-After past the bound).

The real app, on a real Redis and SQLite, in-process (ASGI) or under uvicorn."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from tests.api.multipart import HEADERS, multipart
from tests.support.api import api_client, api_settings, live_server
from tests.support.pdfs import make_pdf

PDF = make_pdf(1, "Unicode names, page {n}.")
NAME = "Résumé – 東京 👍.pdf"
ENCODED = "R%C3%A9sum%C3%A9%20%E2%80%93%20%E6%9D%B1%E4%BA%AC%20%F0%9F%91%8D.pdf"


async def test_rfc_5987_filename_star_is_the_name_kept(
    tmp_path: Path, redis_url: str, key_prefix: str, aredis: object
) -> None:
    """The three ways clients send a non-ASCII name: raw UTF-8 (browsers, curl, httpx),
    filename* alone (requests), and an ASCII fallback plus filename* (RFC 6266)."""
    settings = api_settings(tmp_path, redis_url, key_prefix)
    cases = [
        f'form-data; name="files"; filename="{NAME}"'.encode(),
        f"form-data; name=\"files\"; filename*=utf-8''{ENCODED}".encode(),
        f"form-data; name=\"files\"; filename=\"Resume - Tokyo.pdf\"; filename*=UTF-8''{ENCODED}"
        .encode(),
    ]  # fmt: skip
    async with api_client(settings) as (client, _):
        for i, disposition in enumerate(cases):
            pdf = make_pdf(1, f"Unicode names, case {i}, page {{n}}.")  # a new job each time
            r = await client.post("/analyze", content=multipart((disposition, pdf)),
                                  headers=HEADERS)  # fmt: skip
            assert r.status_code == 202, r.text
            (doc,) = r.json()["documents"]
            assert (doc["name"], doc["status"]) == (NAME, "queued"), (i, doc)


async def test_a_nul_byte_in_a_filename_or_field_is_a_422(
    tmp_path: Path, redis_url: str, key_prefix: str, aredis: object
) -> None:
    settings = api_settings(tmp_path, redis_url, key_prefix)
    async with api_client(settings) as (client, _):
        body = multipart((b'form-data; name="files"; filename="a\x00b.pdf"', PDF))
        r = await client.post("/analyze", content=body, headers=HEADERS)
        assert r.status_code == 422 and "NUL" in r.json()["detail"]
        r = await client.post("/analyze", files={"files": ("a.pdf", PDF)},
                              data={"label": "bad\x00label"})  # fmt: skip
        assert r.status_code == 422 and "NUL" in r.json()["detail"]


async def test_concurrent_upload_bytes_are_bounded_and_uploads_go_to_disk(
    tmp_path: Path, redis_url: str, key_prefix: str, aredis: object
) -> None:
    """One upload is half sent: its bytes are in a file under PIPELINE_HOME/uploads, not in
    memory, and a second upload that would take the API past its bound gets 503 with
    Retry-After at once. When the first finishes, its file is gone and the second goes in."""
    text = "Page {n}. " + " ".join(os.urandom(8).hex() for _ in range(60))
    big = [make_pdf(150, text + f" doc {i}") for i in range(2)]
    bodies = [multipart((f'form-data; name="files"; filename="big-{i}.pdf"'.encode(), pdf))
              for i, pdf in enumerate(big)]  # fmt: skip
    settings = api_settings(tmp_path, redis_url, key_prefix, max_upload_bytes=256 * 1024,
                            max_concurrent_upload_bytes=300 * 1024)  # fmt: skip
    uploads = settings.home / "uploads"
    half = len(bodies[0]) // 2
    go_on = asyncio.Event()

    async def slowly() -> AsyncIterator[bytes]:
        yield bodies[0][:half]
        await go_on.wait()
        yield bodies[0][half:]

    with live_server(settings) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            headers = {**HEADERS, "Content-Length": str(len(bodies[0]))}
            first = asyncio.create_task(client.post("/analyze", content=slowly(), headers=headers))
            deadline = asyncio.get_running_loop().time() + 30
            while not any(f.stat().st_size > half // 2 for f in uploads.iterdir()):
                assert asyncio.get_running_loop().time() < deadline, "no spooled upload file"
                await asyncio.sleep(0.05)
            refused = await client.post("/analyze", content=bodies[1], headers=HEADERS)
            assert refused.status_code == 503, refused.text
            assert refused.headers["Retry-After"].isdigit()
            assert "PIPELINE_MAX_CONCURRENT_UPLOAD_BYTES" in refused.json()["detail"]
            go_on.set()
            done = await first
            assert done.status_code == 202, done.text
            assert done.json()["documents"][0]["status"] == "queued"
            assert list(uploads.iterdir()) == []
            again = await client.post("/analyze", content=bodies[1], headers=HEADERS)
            assert again.status_code == 202 and again.json()["documents"][0]["status"] == "queued"
