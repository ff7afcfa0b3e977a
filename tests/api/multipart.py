"""Multipart bodies built by hand, so a test controls the exact header bytes a client sends."""

from __future__ import annotations

BOUNDARY = "pipeline-test-boundary"
HEADERS = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def multipart(*parts: tuple[bytes, bytes]) -> bytes:
    """A multipart/form-data body from (Content-Disposition value, content) pairs."""
    out = b""
    for disposition, content in parts:
        out += (f"--{BOUNDARY}\r\n".encode() + b"Content-Disposition: " + disposition
                + b"\r\nContent-Type: application/pdf\r\n\r\n" + content + b"\r\n")  # fmt: skip
    return out + f"--{BOUNDARY}--\r\n".encode()
