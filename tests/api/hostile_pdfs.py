"""PDFs built to be expensive to open, for the API's inspection limits."""

from __future__ import annotations

import zlib


def xref_bomb(objects: int = 2_000_000) -> bytes:
    """A valid one-page PDF of ~15 KB whose cross-reference stream declares `objects` entries
    (all pointing at the catalog): opening it makes pypdf build every entry (issue 11's 20 KB
    file: 6.7 s and 233 MB; seconds to tens of seconds and ~220 MB here)."""
    body = bytearray(b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n")
    offsets: dict[int, int] = {}
    for n, content in (
        (1, b"<< /Type /Catalog /Pages 2 0 R >>"),
        (2, b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>"),
        (3, b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>"),
    ):
        offsets[n] = len(body)
        body += f"{n} 0 obj\n".encode() + content + b"\nendobj\n"
    xref_at = len(body)

    def entry(offset: int) -> bytes:
        return b"\x01" + offset.to_bytes(3, "big") + b"\x00"

    rows = b"\x00\x00\x00\xff\xff" + b"".join(entry(offsets[n]) for n in (1, 2, 3))
    rows += entry(xref_at) + entry(offsets[1]) * (objects - 5)
    data = zlib.compress(rows, 9)
    body += (f"4 0 obj\n<< /Type /XRef /Size {objects} /W [1 3 1] /Root 1 0 R "
             f"/Filter /FlateDecode /Length {len(data)} >>\nstream\n").encode()  # fmt: skip
    body += data + b"\nendstream\nendobj\n" + f"startxref\n{xref_at}\n%%EOF\n".encode()
    return bytes(body)
