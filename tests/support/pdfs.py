"""Real PDFs made on the fly for tests that need a document of a given size."""

from __future__ import annotations


def make_pdf(pages: int = 1, text: str = "Page {n}. Lorem ipsum.") -> bytes:
    """A real PDF (fpdf2) with `pages` pages; `{n}` in `text` becomes the page number."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    for n in range(1, pages + 1):
        pdf.add_page()
        pdf.multi_cell(0, 8, text.format(n=n))
    return bytes(pdf.output())
