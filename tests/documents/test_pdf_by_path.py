"""A job's PDF by path, not bytes (pipeline/storage/local.py, `Part.pdf_file`): the pool
process reads the stored file, and the call reads it (inline) or streams it (Files API)
only when it is sent. Real pool processes, the real google-genai client over HTTP to the
emulator; the whole worker path is covered by tests/scenarios/test_files_api.py and the
analysis tests, which now go this way."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fpdf import FPDF
from PIL import Image

from pipeline.errors import DocumentMissing
from pipeline.llm.counting import rough_input_tokens
from pipeline.llm.gemini import GeminiProvider
from pipeline.llm.provider import LLMRequest, Part
from pipeline.queue.pool import CpuPool
from pipeline.storage.files import FileStore
from pipeline.storage.local import local_file
from tasks.pdf import inspect_pdf, pages_without_text
from tests.support.emulator import RunningEmulator, start_emulator
from tests.support.pdfs import make_pdf

MODEL = "gemini-3.5-flash-lite"
THRESHOLD = 20_000  # bytes: the Files API threshold for these tests


def _large_pdf(text: str) -> bytes:
    """Two pages carrying `text` and ~50 kB of incompressible image: over THRESHOLD."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    for n in (1, 2):
        pdf.add_page()
        pdf.multi_cell(0, 8, f"Page {n}. {text}")
    pdf.image(Image.frombytes("RGB", (130, 130), os.urandom(130 * 130 * 3)), x=10, y=40, w=100)
    data = bytes(pdf.output())
    assert len(data) > THRESHOLD
    return data


def _stored(store: FileStore, data: bytes) -> Part:
    sha = hashlib.sha256(data).hexdigest()
    store.put(sha, data)
    return Part.pdf_file(str(store.local_path(sha)), sha, len(data), pages=None)


class NoLocalFiles(FileStore):
    """A store that keeps no local files, as S3: readers get a temporary copy."""

    def local_path(self, sha256: str) -> None:  # type: ignore[override]
        return None


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    with start_emulator() as running:
        yield running


def test_a_pdf_by_path_has_the_keys_and_size_of_its_bytes(tmp_path: Path) -> None:
    """The call key, the count cache key and the inline size do not depend on how the part
    holds its bytes, so a job that read its PDF by path finds the answers and counts stored
    by one that held the bytes (and the call store's truth rules hold across versions)."""
    data = make_pdf(3, "Page {n}. Ledger of the Vesper account.")
    by_path = _stored(FileStore(tmp_path / "docs"), data)
    for with_pages in (by_path, Part.pdf_file(by_path.path or "", by_path.sha256 or "",
                                              len(data), pages=3)):  # fmt: skip
        a = LLMRequest(model=MODEL, parts=(Part.pdf(data), Part(text="Go")), prompt_version="p")
        b = LLMRequest(model=MODEL, parts=(with_pages, Part(text="Go")), prompt_version="p")
        assert b.content_hash() == a.content_hash()
        assert b.prompt_hash() == a.prompt_hash()
        assert b.payload_bytes() == a.payload_bytes()
        assert b.rest_body() == a.rest_body()
        assert rough_input_tokens(b) == rough_input_tokens(a) == 3 * 560 + 1
    with pytest.raises(ValueError, match="sha256 and size"):
        Part(mime_type="application/pdf", path=by_path.path)


async def test_the_pool_reads_the_pdf_from_its_path(tmp_path: Path) -> None:
    """Inspection and the pages-without-text pass are given a path and read the file in the
    pool process: the same answers as from the bytes; a file that is gone is DocumentMissing
    (a pipeline error the pool re-raises by name)."""
    data = make_pdf(2, "Page {n}. Text.")
    path = tmp_path / "a.pdf"
    path.write_bytes(data)
    pool = CpuPool(workers=1, max_tasks_per_child=5)
    try:
        info = await pool.run("tasks.pdf:inspect_for_analysis", str(path), 10**8, 100, "a.pdf",
                              False)  # fmt: skip
        assert info == {**inspect_pdf(data, 10**8, 100, "a.pdf").to_dict(),
                        "pages_without_text": None}  # fmt: skip
        blank = await pool.run("tasks.pdf:pages_without_text_file", str(path))
        assert blank == pages_without_text(data) == []
        parts = await pool.run("tasks.pdf:split_file", str(path), [[2, 2]])
        assert len(parts) == 1 and inspect_pdf(parts[0], 10**8, 100).page_count == 1
        with pytest.raises(DocumentMissing):
            await pool.run("tasks.pdf:inspect_for_analysis", str(tmp_path / "gone.pdf"), 10**8,
                           9, "gone.pdf", True)  # fmt: skip
    finally:
        pool.shutdown()


async def test_the_file_store_lends_its_own_file_and_another_store_a_copy_it_deletes(
    tmp_path: Path,
) -> None:
    data = make_pdf(1)
    sha = hashlib.sha256(data).hexdigest()
    files = FileStore(tmp_path / "docs")
    files.put(sha, data)
    async with local_file(files, sha, tmp_path / "scratch") as found:
        assert found.path == files.path(sha) and not found.copy and found.size == len(data)
    assert files.exists(sha)  # the stored file itself is never deleted by a reader

    remote = NoLocalFiles(tmp_path / "remote")
    remote.put(sha, data)
    left = tmp_path / "scratch" / "left-by-a-killed-worker.pdf"
    left.parent.mkdir()
    left.write_bytes(b"%PDF-")
    os.utime(left, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    async with local_file(remote, sha, tmp_path / "scratch") as found:
        assert found.copy and found.path.parent == tmp_path / "scratch"
        assert found.path.read_bytes() == data and found.size == len(data)
    assert not found.path.exists()  # the copy goes when the block ends
    assert not left.exists()  # and a stale one when the next copy is made
    with pytest.raises(RuntimeError):  # ... also when the block fails
        async with local_file(remote, sha, tmp_path / "scratch") as failing:
            raise RuntimeError("the call failed")
    assert not failing.path.exists()
    with pytest.raises(DocumentMissing):
        async with local_file(remote, "0" * 64, tmp_path / "scratch"):
            pass
    assert list((tmp_path / "scratch").iterdir()) == []


class SlowRemote(NoLocalFiles):
    """A store without local files whose GET waits until the test lets it go on."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.getting = threading.Event()
        self.go_on = threading.Event()

    def get(self, sha256: str) -> bytes:
        self.getting.set()
        assert self.go_on.wait(30)
        return super().get(sha256)


async def test_a_copy_being_made_when_the_job_is_cancelled_is_removed(tmp_path: Path) -> None:
    """A job cancelled (lease lost, timeout, shutdown) while its S3 copy is being written:
    the thread cannot be stopped and writes the copy anyway, so the block waits for it and
    deletes it before the cancellation goes on; it used to stay until the day-old sweep."""
    data = make_pdf(1)
    sha = hashlib.sha256(data).hexdigest()
    remote = SlowRemote(tmp_path / "remote")
    remote.put(sha, data)
    scratch = tmp_path / "scratch"

    async def job() -> None:
        async with local_file(remote, sha, scratch):
            raise AssertionError("the block never starts: the job was cancelled first")

    task = asyncio.create_task(job())
    assert await asyncio.to_thread(remote.getting.wait, 10)
    task.cancel()
    try:
        for _ in range(20):  # the cancellation reaches the task in a loop turn or two
            await asyncio.sleep(0)
        assert not task.done(), "the job ended while its copy was still being written"
    finally:
        remote.go_on.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)
    assert list(scratch.iterdir()) == []


async def test_a_pdf_by_path_is_uploaded_from_its_file_or_sent_inline_as_its_bytes(
    tmp_path: Path, emu: RunningEmulator,
) -> None:  # fmt: skip
    """Through google-genai to the emulator: a large PDF part read from a file is uploaded
    by the Files API from that file (streamed) and cited by countTokens and generateContent;
    a small one goes inline, read when sent. The emulator decodes both: the bytes it saw
    are the file's."""
    store = FileStore(tmp_path / "docs")
    big, small = _large_pdf("Quarterly tin ledger."), make_pdf(1, "A short note.")
    big_part, small_part = _stored(store, big), _stored(store, small)
    provider = GeminiProvider(api_key=emu.api_key, base_url=emu.base_url,
                              files_min_bytes=THRESHOLD)  # fmt: skip
    try:
        request = LLMRequest(model=MODEL, parts=(big_part, Part(text="Summarise.")),
                             max_output_tokens=256)  # fmt: skip
        files = provider.call_files(request)
        assert files is not None
        sent = await files.request()
        assert sent.parts[0].file_uri is not None and sent.parts[0].data is None
        assert await provider.count_tokens(sent) > 2 * 500  # two pages, from the file
        await provider.generate(sent)
        await files.release()
        inline = LLMRequest(model=MODEL, parts=(small_part, Part(text="Summarise.")),
                            max_output_tokens=256)  # fmt: skip
        assert provider.call_files(inline) is None
        await provider.generate(inline)
    finally:
        await provider.aclose()
    stats = emu.stats()
    by_file = [r for r in stats["requests"] if r["file_parts"]]
    sent_inline = [r for r in stats["requests"] if not r["file_parts"]]
    assert [(r["file_bytes"], r["inline_bytes"], r["pdf_pages"]) for r in by_file] == [
        (len(big), 0, 2)
    ]
    assert [(r["inline_bytes"], r["pdf_pages"]) for r in sent_inline] == [(len(small), 1)]
    assert stats["files"] == {"uploads": 1, "deleted": 1, "downloads": 0, "live": 0}
    assert stats["largest_request_bytes"] < THRESHOLD


async def test_a_large_pdf_file_gone_before_its_upload_is_document_missing(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    """A large PDF part whose file is gone when its call uploads it: DocumentMissing (bad
    input, nothing sent), not a failed upload the job would report as a provider refusal."""
    store = FileStore(tmp_path / "docs")
    part = _stored(store, _large_pdf("Ledger of a vanished file."))
    provider = GeminiProvider(api_key=emu.api_key, base_url=emu.base_url,
                              files_min_bytes=THRESHOLD)  # fmt: skip
    try:
        request = LLMRequest(model=MODEL, parts=(part, Part(text="Summarise.")),
                             max_output_tokens=256)  # fmt: skip
        files = provider.call_files(request)
        assert files is not None
        os.unlink(part.path or "")
        with pytest.raises(DocumentMissing, match="could not be read"):
            await files.request()
    finally:
        await provider.aclose()
    assert emu.stats()["files"]["uploads"] == 0


def _pss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        return sum(int(line.split()[1]) for line in fh if line.startswith("Pss:")) / 1024


def _noise_pdf(pages: int) -> bytes:
    """`pages` pages of incompressible image, ~1 MB each."""
    pdf = FPDF()
    for n in range(pages):
        pdf.add_page()
        pdf.image(Image.frombytes("RGB", (600, 580), os.urandom(600 * 580 * 3)), x=10, y=10,
                  w=190)  # fmt: skip
        pdf.set_font("helvetica", size=11)
        pdf.cell(0, 8, f"Sheet {n + 1}")
    return bytes(pdf.output())


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="Linux /proc needed")
async def test_a_pool_process_does_not_keep_the_pdfs_it_inspected(tmp_path: Path) -> None:
    """A pypdf reader is a reference cycle holding its whole PDF: without a collection after
    each call, a pool process kept one more PDF per inspection until the next full
    collection (pipeline/queue/pool.py). Six inspections of a 5 MB PDF must not leave the
    process holding even one of them."""
    data = _noise_pdf(5)
    size_mb = len(data) / 2**20
    assert size_mb > 4
    path = tmp_path / "drawings.pdf"
    path.write_bytes(data)
    pool = CpuPool(workers=1, max_tasks_per_child=50)
    try:
        await pool.run("tasks.pdf:inspect_for_analysis", str(path), 10**9, 100, "d.pdf",
                       False)  # imports, warm-up  # fmt: skip
        executor = pool._executor
        assert executor is not None
        (pid,) = [p.pid for p in executor._processes.values()]
        before = _pss_mb(pid)
        for _ in range(6):
            await pool.run("tasks.pdf:inspect_for_analysis", str(path), 10**9, 100, "d.pdf",
                           False)  # fmt: skip
        grown = _pss_mb(pid) - before
    finally:
        pool.shutdown()
    assert grown < size_mb, f"the pool process grew {grown:.1f} MB ({size_mb:.1f} MB PDF)"
