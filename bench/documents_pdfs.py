"""The PDFs bench/documents.py measures with, made by fpdf2 (and Pillow for page images) and
cached under .pipeline/bench/ so a second run starts at once.

- `one_page_pdfs(n)`: n distinct one-page text PDFs (~1 KB each), like a pile of letters.
- `large_pdfs(n, mb)`: n distinct PDFs of about `mb` MB, pages of random-noise images (noise
  does not compress, so the file is as large as its images), like scanned drawings.
- `manual(pages)`: one text PDF of `pages` pages (a heading and two paragraphs a page), the
  2,415-page manual of issue 16.

Every file's content differs (its number is printed on its pages, its noise is seeded by
it), so each is its own document to the pipeline, whose idempotency key is the content hash.
"""

from __future__ import annotations

import random
from pathlib import Path

from bench.common import ROOT

CACHE = ROOT / ".pipeline" / "bench" / "documents"
MB = 1024 * 1024
# One noise page: 1024 x 683 RGB, ~2.0 MiB stored (Flate cannot shrink noise).
_IMAGE_SIZE = (1024, 683)
_PAGE_BYTES = _IMAGE_SIZE[0] * _IMAGE_SIZE[1] * 3

_PARAGRAPH = (
    "Section {s}.{n}: before servicing the unit, isolate it from the supply and wait five "
    "minutes for the capacitors to discharge. Check the torque of every terminal screw "
    "against table {n} and record the reading in the service log. Replace any seal that "
    "shows cracking; reuse is not permitted under warranty clause {s}."
)


def _cached(path: Path, make: object) -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(".tmp")
        temp.write_bytes(make())  # type: ignore[operator]
        temp.replace(path)
    return path


def _text_pdf(pages: int, title: str) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=10)
    for n in range(1, pages + 1):
        pdf.add_page()
        for height, text in ((6, f"{title}, page {n}"),
                             (5, _PARAGRAPH.format(s=n // 50 + 1, n=n)),
                             (5, _PARAGRAPH.format(s=n // 50 + 1, n=n + 1))):  # fmt: skip
            pdf.multi_cell(0, height, text, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def one_page_pdfs(n: int) -> list[Path]:
    """n distinct one-page PDFs in one folder (the folder is what `pipeline submit` takes)."""
    folder = CACHE / "one-page"
    return [_cached(folder / f"letter-{i:05d}.pdf", lambda i=i: _text_pdf(1, f"Letter {i}"))
            for i in range(n)]  # fmt: skip


def _noise_pdf(index: int, mb: float) -> bytes:
    from fpdf import FPDF
    from PIL import Image

    rng = random.Random(index)
    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    for n in range(1, max(1, round(mb * MB / _PAGE_BYTES)) + 1):
        pdf.add_page()
        pdf.multi_cell(0, 8, f"Drawing set {index}, sheet {n}: scanned at 150 dpi.")
        noise = Image.frombytes("RGB", _IMAGE_SIZE, rng.randbytes(_PAGE_BYTES))
        pdf.image(noise, x=10, y=30, w=190)
    return bytes(pdf.output())


def large_pdfs(n: int, mb: float) -> list[Path]:
    """n distinct PDFs of about `mb` MB each (whole pages of ~2 MB)."""
    folder = CACHE / f"large-{mb:g}mb"
    return [_cached(folder / f"drawings-{i:03d}.pdf", lambda i=i: _noise_pdf(i, mb))
            for i in range(n)]  # fmt: skip


def manual(pages: int) -> Path:
    """One text PDF of `pages` pages."""
    return _cached(CACHE / f"manual-{pages}.pdf",
                   lambda: _text_pdf(pages, f"Service manual ({pages} pages)"))  # fmt: skip
