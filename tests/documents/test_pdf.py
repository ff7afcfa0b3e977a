"""tasks/pdf.py on real files: the committed fixtures and sample documents, parsed by pypdf
(inspection, splitting) and PDFium (text)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import itertools
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import ModuleType

import pytest
from fpdf import FPDF
from pypdf import PdfReader

from pipeline.errors import BadDocument
from tasks.pdf import (
    DEFAULT_MAX_TOKENS,
    MAX_PAGES_PER_CALL,
    PdfInfo,
    extract_text,
    inspect_pdf,
    plan_chunks,
    split_pages,
    tokens_per_page,
)
from tests.support import ROOT as REPO

FIXTURES = REPO / "tests" / "fixtures"
DOCS = REPO / "examples" / "docs"
MB = 1024 * 1024
BIG = 50 * MB


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("zero.pdf", "is empty (0 bytes)"),
        ("corrupt.pdf", "is corrupt"),
        ("truncated.pdf", "is truncated"),
        ("encrypted.pdf", "is encrypted; remove the password and submit again"),
        ("not_a_pdf.pdf", "is not a PDF (it is a PNG image)"),
        ("notes.txt", "is not a PDF (it is plain text)"),
    ],
)
def test_unusable_fixtures_are_refused_with_a_clear_message(name: str, message: str) -> None:
    with pytest.raises(BadDocument) as info:
        inspect_pdf(_read(name), BIG, 1000, name=name)
    assert str(info.value).startswith(f"{name} ")
    assert message in str(info.value)


def test_encrypted_fixture_really_needs_its_password() -> None:
    reader = PdfReader(io.BytesIO(_read("encrypted.pdf")))
    assert reader.is_encrypted
    assert reader.decrypt(_load(FIXTURES / "make_fixtures.py").USER_PASSWORD) != 0


def test_owner_password_only_is_accepted() -> None:
    data = _read("encrypted_empty_pw.pdf")
    info = inspect_pdf(data, BIG, 1000)
    assert info.encrypted is True
    assert info.page_count == 3
    assert "Memo page 2" in extract_text(data, 2, 2)[0]
    (part,) = split_pages(data, [(1, 3)])
    assert not PdfReader(io.BytesIO(part)).is_encrypted


def test_valid_fixture_is_described() -> None:
    data = _read("valid.pdf")
    info = inspect_pdf(data, BIG, 1000)
    assert info == PdfInfo(
        page_count=3,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        pdf_version=info.pdf_version,
        encrypted=False,
        title="Fixture memo",
        author=info.author,
        subject=None,
        creator=info.creator,
        producer=info.producer,
        created="2026-01-05T00:00:00+00:00",
    )
    assert info.pdf_version.startswith("1.")
    assert pickle.loads(pickle.dumps(info)) == info
    assert info.to_dict()["page_count"] == 3


def test_objects_without_a_page_tree_are_refused() -> None:
    data = (
        b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 9 0 R >>\nendobj\n"
        b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"
    )
    with pytest.raises(BadDocument, match=r"(is corrupt|has no pages)"):
        inspect_pdf(data, BIG, 1000)


def test_size_and_page_limits() -> None:
    data = (DOCS / "services_contract.pdf").read_bytes()
    with pytest.raises(BadDocument, match=r"over the 0\.0 MB limit; split it"):
        inspect_pdf(data, 100, 1000, name="contract.pdf")
    with pytest.raises(BadDocument, match="has 2 pages, over the limit of 1"):
        inspect_pdf(data, BIG, 1, name="contract.pdf")


@pytest.mark.parametrize(
    ("name", "pages", "title"),
    [
        ("services_contract.pdf", 2, "Master Services Agreement"),
        ("invoice.pdf", 1, "Invoice BWA-2026-0042"),
        ("annual_report.pdf", 40, "Aldercrest Freight Ltd Annual Report 2025"),
        ("scanned_delivery_note.pdf", 1, "Scanned delivery note"),
    ],
)
def test_samples_inspect(name: str, pages: int, title: str) -> None:
    info = inspect_pdf((DOCS / name).read_bytes(), BIG, 1000, name=name)
    assert (info.page_count, info.title, info.encrypted) == (pages, title, False)
    assert info.created == "2026-03-02T09:00:00+00:00"


def test_extract_text_finds_the_facts() -> None:
    contract = extract_text((DOCS / "services_contract.pdf").read_bytes())
    assert len(contract) == 2
    assert "Brightwater Analytics GmbH" in contract[0]
    assert "EUR 18,500.00" in contract[0]
    assert "Margaret Okafor" in contract[1]
    invoice = extract_text((DOCS / "invoice.pdf").read_bytes())
    assert "Due date: 2026-03-31" in invoice[0]
    assert "EUR 25,662.35" in invoice[0]


def test_extract_text_of_an_image_only_page_is_empty() -> None:
    assert extract_text((DOCS / "scanned_delivery_note.pdf").read_bytes()) == [""]


def test_extract_text_page_window() -> None:
    data = (DOCS / "annual_report.pdf").read_bytes()
    window = extract_text(data, 20, 22)
    assert len(window) == 3
    assert window[0].startswith("Financial review (page 20)")
    assert "(page 22)" in window[2].splitlines()[0]
    with pytest.raises(ValueError, match="outside 1-40"):
        extract_text(data, 39, 41)


def test_split_pages_round_trip() -> None:
    data = (DOCS / "annual_report.pdf").read_bytes()
    parts = split_pages(data, [(1, 10), (11, 40), (40, 40)])
    counts = [len(PdfReader(io.BytesIO(part)).pages) for part in parts]
    assert counts == [10, 30, 1]
    assert extract_text(parts[1], 1, 1) == extract_text(data, 11, 11)
    assert extract_text(parts[2]) == extract_text(data, 40, 40)
    for part in parts:
        inspect_pdf(part, BIG, 1000)  # each part is a standalone, valid PDF
    with pytest.raises(ValueError):
        split_pages(data, [(5, 4)])


def test_plan_chunks_small_documents_are_one_call() -> None:
    assert plan_chunks(1, 2_000) == [(1, 1)]
    assert plan_chunks(40, 71_000) == [(1, 40)]
    with pytest.raises(ValueError):
        plan_chunks(0, 10)


def _assert_partition(ranges: list[tuple[int, int]], pages: int) -> None:
    assert ranges[0][0] == 1 and ranges[-1][1] == pages
    for (_, last), (first, _) in itertools.pairwise(ranges):
        assert first == last + 1
    sizes = [last - first + 1 for first, last in ranges]
    assert max(sizes) - min(sizes) <= 1  # balanced, so map calls finish together


def test_plan_chunks_3000_pages_by_tokens() -> None:
    ranges = plan_chunks(3000, 3 * MB, tokens_per_page=560)
    per_chunk = DEFAULT_MAX_TOKENS // 560
    assert len(ranges) == -(-3000 // per_chunk)
    _assert_partition(ranges, 3000)
    assert all((last - first + 1) * 560 <= DEFAULT_MAX_TOKENS for first, last in ranges)


def test_plan_chunks_by_bytes_and_by_page_cap() -> None:
    by_bytes = plan_chunks(100, 100 * MB, tokens_per_page=1, max_tokens=10**9)
    _assert_partition(by_bytes, 100)
    # each part, base64-encoded, fits the 20 MB inline request limit
    assert all((last - first + 1) * MB * 4 / 3 < 20 * MB for first, last in by_bytes)
    assert len(by_bytes) > 1
    by_pages = plan_chunks(3000, 3 * MB, tokens_per_page=1, max_tokens=10**9)
    assert by_pages == [(1, 1000), (1001, 2000), (2001, 3000)]
    assert MAX_PAGES_PER_CALL == 1000
    # one page that alone is over the limit cannot be split further
    assert plan_chunks(1, 80 * MB) == [(1, 1)]


def test_tokens_per_page_by_model_family() -> None:
    assert tokens_per_page("gemini-2.5-flash") == 258
    assert tokens_per_page("gemini-3.5-flash-lite") == 560


def test_inspect_runs_in_a_process_pool() -> None:
    """The worker calls these through multiprocessing: arguments, results and errors cross it."""
    with ProcessPoolExecutor(max_workers=1) as pool:
        info = pool.submit(inspect_pdf, _read("valid.pdf"), BIG, 1000).result(timeout=60)
        assert info.page_count == 3
        failed = pool.submit(inspect_pdf, _read("encrypted.pdf"), BIG, 1000, "x.pdf")
        with pytest.raises(BadDocument, match=r"x\.pdf is encrypted"):
            failed.result(timeout=60)


@pytest.mark.slow
def test_3000_page_manual_end_to_end() -> None:
    pdf = FPDF()
    pdf.set_font("Helvetica", "", 11)
    for page in range(1, 3001):
        pdf.add_page()
        pdf.cell(0, 10, f"Manual page {page}: torque settings for assembly step {page}.")
    data = bytes(pdf.output())
    info = inspect_pdf(data, BIG, 5000)
    assert info.page_count == 3000
    ranges = plan_chunks(info.page_count, info.size_bytes, tokens_per_page("gemini-3.5-flash"))
    parts = split_pages(data, ranges)
    assert [len(PdfReader(io.BytesIO(p)).pages) for p in parts] == [
        last - first + 1 for first, last in ranges
    ]
    last_part = extract_text(parts[-1])
    assert last_part[-1].strip() == "Manual page 3000: torque settings for assembly step 3000."


def test_fixtures_script_reproduces_committed_files(tmp_path: Path) -> None:
    written = _load(FIXTURES / "make_fixtures.py").main(tmp_path)
    assert {p.name for p in written} >= {
        "corrupt.pdf", "truncated.pdf", "encrypted.pdf", "encrypted_empty_pw.pdf",
        "zero.pdf", "not_a_pdf.pdf", "notes.txt",
    }
    for path in written:  # the encrypted ones too: their salts come from a seeded generator
        assert path.read_bytes() == (FIXTURES / path.name).read_bytes(), path.name


@pytest.mark.slow
def test_samples_script_is_deterministic_and_committed(tmp_path: Path) -> None:
    samples = _load(REPO / "examples" / "make_samples.py")
    written = samples.main(tmp_path)
    assert len(written) == len(samples.SAMPLES) == 7
    for path in written:
        assert path.read_bytes() == (DOCS / path.name).read_bytes(), (
            f"{path.name} differs: run `make samples` and commit the result"
        )
