"""Reading a multipart upload as it streams in, refusing it as soon as it must be refused.

Starlette's own `request.form()` spools the whole body before a handler sees it, so a
client could push gigabytes before hearing "too large". Here the body is read chunk by
chunk from `request.stream()` and fed to python-multipart's incremental parser: the byte
count is checked on every chunk (and Content-Length before the first), and each file's
magic bytes as soon as its first KiB has arrived, so an oversized or non-PDF upload is
answered while most of it is still unread.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from pipeline.errors import UploadRejected

FILE_FIELD = "files"
FORM_FIELDS = ("model", "priority", "budget", "label", "mode")
PDF_MAGIC = b"%PDF-"
# The PDF spec lets the header start anywhere in the first KiB (some writers prepend junk).
MAGIC_WINDOW_BYTES = 1024
MAX_FIELD_BYTES = 1024
MAX_PARTS = 1000


@dataclass
class UploadedFile:
    name: str
    data: bytes


@dataclass
class UploadForm:
    files: list[UploadedFile] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)
    bytes_read: int = 0

    def fingerprint(self) -> str:
        """What makes two requests "the same" for an Idempotency-Key: the form fields and
        each file's name and content hash, not the raw body (multipart boundaries are random)."""
        canon = {
            "fields": dict(sorted(self.fields.items())),
            "files": [[f.name, hashlib.sha256(f.data).hexdigest()] for f in self.files],
        }
        return hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()


def too_large(limit_bytes: int) -> UploadRejected:
    return UploadRejected(
        f"upload larger than the {limit_bytes}-byte limit: send fewer or smaller PDFs per "
        "request (the server's limit is PIPELINE_MAX_UPLOAD_BYTES)",
        413,
    )


class _Collector:
    """python-multipart callbacks that build the form and note the first reason to refuse."""

    def __init__(self) -> None:
        self.form = UploadForm()
        self.error: UploadRejected | None = None
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._filename: str | None = None
        self._buf = bytearray()
        self._magic_checked = False
        self._parts = 0
        self.open_part = False  # a part began and has not ended: the body was cut short

    def _fail(self, message: str, status: int) -> None:
        if self.error is None:
            self.error = UploadRejected(message, status)

    def on_part_begin(self) -> None:
        self._headers = {}
        self._buf = bytearray()
        self._magic_checked = False
        self.open_part = True
        self._parts += 1
        if self._parts > MAX_PARTS:
            self._fail(f"more than {MAX_PARTS} parts in one upload: split it up", 422)

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition"))
        self._name = params.get(b"name", b"").decode("utf-8", "replace")
        raw = params.get(b"filename")
        self._filename = None if raw is None else raw.decode("utf-8", "replace")
        if self._name != FILE_FIELD and self._name not in FORM_FIELDS:
            allowed = ", ".join((FILE_FIELD, *FORM_FIELDS))
            self._fail(f"unknown form field {self._name!r}: use {allowed}", 422)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.error is not None:
            return
        self._buf += data[start:end]
        if self._name in FORM_FIELDS and len(self._buf) > MAX_FIELD_BYTES:
            self._fail(f"{self._name}: longer than {MAX_FIELD_BYTES} bytes", 422)
        elif self._name == FILE_FIELD and len(self._buf) >= MAGIC_WINDOW_BYTES:
            self._check_magic()

    def _check_magic(self) -> None:
        if self._magic_checked:
            return
        self._magic_checked = True
        if PDF_MAGIC not in bytes(self._buf[:MAGIC_WINDOW_BYTES]):
            name = self._filename or "files"
            self._fail(
                f"{name!r} is not a PDF (no %PDF- header): upload PDF files only", 415
            )

    def on_part_end(self) -> None:
        self.open_part = False
        if self.error is not None:
            return
        if self._name == FILE_FIELD:
            self._check_magic()
            if self.error is None:
                index = len(self.form.files) + 1
                name = self._filename or f"document-{index}.pdf"
                self.form.files.append(UploadedFile(name, bytes(self._buf)))
        elif self._name in FORM_FIELDS:
            if self._name in self.form.fields:
                self._fail(f"{self._name}: given more than once; send it once", 422)
            try:
                self.form.fields[self._name] = self._buf.decode("utf-8").strip()
            except UnicodeDecodeError:
                self._fail(f"{self._name}: not valid UTF-8 text", 422)
        self._buf = bytearray()


async def read_upload(
    headers: dict[str, str], stream: AsyncIterator[bytes], max_bytes: int
) -> UploadForm:
    """Parse a multipart/form-data body from `stream`, stopping at the first reason to refuse.

    Raises UploadRejected: 413 past `max_bytes`, 415 for a non-multipart body or a file that is
    not a PDF, 400 for a malformed body, 422 for unknown, repeated or missing fields.
    """
    ctype, params = parse_options_header(headers.get("content-type"))
    if ctype != b"multipart/form-data":
        raise UploadRejected(
            "send the PDFs as multipart/form-data in the `files` field "
            "(e.g. curl -F files=@report.pdf ...)",
            415,
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadRejected("the multipart Content-Type has no boundary: let your HTTP "
                             "client build the multipart body", 400)  # fmt: skip
    length = headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise too_large(max_bytes)
    collector = _Collector()
    callbacks = {name: getattr(collector, name) for name in (
        "on_part_begin", "on_part_data", "on_part_end", "on_header_field",
        "on_header_value", "on_header_end", "on_headers_finished",
    )}  # fmt: skip
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        async for chunk in stream:
            collector.form.bytes_read += len(chunk)
            if collector.form.bytes_read > max_bytes:
                raise too_large(max_bytes)
            parser.write(chunk)
            if collector.error is not None:
                raise collector.error
        parser.finalize()
    except FormParserError as exc:
        raise UploadRejected(f"malformed multipart body ({exc}): let your HTTP client "
                             "build it, e.g. curl -F files=@report.pdf", 400) from None  # fmt: skip
    if collector.error is not None:
        raise collector.error
    if collector.open_part:
        raise UploadRejected("the multipart body ended in the middle of a part: resend the "
                             "whole request", 400)  # fmt: skip
    if not collector.form.files:
        raise UploadRejected(
            f"no files: attach one or more PDFs in the `{FILE_FIELD}` field", 422
        )
    return collector.form
