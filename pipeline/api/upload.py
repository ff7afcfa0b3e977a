"""Reading a multipart upload as it streams in, refusing it as soon as it must be refused.

Starlette's own `request.form()` spools the whole body before a handler sees it, so a
client could push gigabytes before hearing "too large". Here the body is read chunk by
chunk from `request.stream()` and fed to python-multipart's streaming parser
(`MultipartParser`, with its header count and size limits); each file goes straight into
python-multipart's `File`, which writes it to a temporary file, so no upload is held in
memory while it arrives. The byte count is checked on every chunk (and Content-Length
before the first), each file's magic bytes as soon as its first KiB has arrived, and every
byte in flight is counted against the API's bound on concurrent upload bytes
(`UploadGate`): past it, a request is answered 503 with Retry-After instead of filling
memory or disk.

The part headers are read with the standard library's email parser, which decodes RFC
5987/2231 `filename*=utf-8''...` (what `requests` sends for non-ASCII names; python-multipart
ignores it by design) and prefers it over an ASCII `filename` fallback, as RFC 6266 asks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import Message
from email.utils import collapse_rfc2231_value
from typing import TYPE_CHECKING

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import File, MultipartParser, parse_options_header

from pipeline.api.errors import HttpError
from pipeline.errors import UploadRejected

if TYPE_CHECKING:
    from python_multipart.multipart import FileConfig

FILE_FIELD = "files"
FORM_FIELDS = ("model", "priority", "budget", "label", "mode", "deadline")
PDF_MAGIC = b"%PDF-"
# The PDF spec lets the header start anywhere in the first KiB (some writers prepend junk).
MAGIC_WINDOW_BYTES = 1024
MAX_FIELD_BYTES = 1024
MAX_PARTS = 1000
UPLOAD_RETRY_AFTER_S = 5


def _file_config(upload_dir: str | None) -> FileConfig:
    """python-multipart's File: to a temporary file from the first byte, deleted on close."""
    return {"MAX_MEMORY_FILE_SIZE": 0, "UPLOAD_DELETE_TMP": True, "UPLOAD_DIR": upload_dir}


class UploadGate:
    """The bound on upload bytes the API holds at once, across requests (one event loop).

    `reserve(n)` counts `n` more bytes or raises HttpError 503 with Retry-After when they
    would take the total past `limit_bytes`; `release(n)` gives them back."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.in_flight = 0

    def reserve(self, n: int) -> None:
        if n > 0 and self.in_flight + n > self.limit_bytes:
            raise HttpError(
                503,
                f"the server is receiving {self.in_flight} bytes of other uploads, its limit "
                f"(PIPELINE_MAX_CONCURRENT_UPLOAD_BYTES={self.limit_bytes}); retry in "
                f"{UPLOAD_RETRY_AFTER_S} s",
                {"Retry-After": str(UPLOAD_RETRY_AFTER_S)},
            )
        self.in_flight += n

    def release(self, n: int) -> None:
        self.in_flight = max(0, self.in_flight - n)


@dataclass
class UploadedFile:
    """One received file, on disk: `path` (deleted by `close`), its size and sha256."""

    name: str
    part: File
    size: int
    sha256: str

    @property
    def path(self) -> str:
        raw = self.part.actual_file_name
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def read_bytes(self) -> bytes:
        handle = self.part.file_object
        handle.seek(0)
        return handle.read()

    def close(self) -> None:
        self.part.close()


@dataclass
class UploadForm:
    files: list[UploadedFile] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)
    bytes_read: int = 0
    reserved: int = 0  # bytes counted against the UploadGate, released by `close`

    def fingerprint(self) -> str:
        """What makes two requests "the same" for an Idempotency-Key: the form fields and
        each file's name and content hash, not the raw body (multipart boundaries are random)."""
        canon = {
            "fields": dict(sorted(self.fields.items())),
            "files": [[f.name, f.sha256] for f in self.files],
        }
        return hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()

    def close(self, gate: UploadGate | None = None) -> None:
        """Delete the temporary files and give the bytes back to the gate."""
        for f in self.files:
            f.close()
        if gate is not None:
            gate.release(self.reserved)
        self.reserved = 0


def too_large(limit_bytes: int) -> UploadRejected:
    return UploadRejected(
        f"upload larger than the {limit_bytes}-byte limit: send fewer or smaller PDFs per "
        "request (the server's limit is PIPELINE_MAX_UPLOAD_BYTES)",
        413,
    )


def disposition(raw: bytes) -> tuple[str, str | None]:
    """(field name, file name or None) from a part's Content-Disposition value; an RFC 5987
    `filename*` wins over a plain `filename`. Raises UploadRejected for a NUL in either."""
    message = Message()
    message["content-disposition"] = raw.decode("utf-8", "replace")
    name, plain, extended = "", None, None
    for key, value in message.get_params(header="content-disposition", failobj=[])[1:]:
        if key == "name":
            name = collapse_rfc2231_value(value)
        elif key == "filename" and isinstance(value, tuple):
            extended = extended or collapse_rfc2231_value(value, errors="replace")
        elif key == "filename":
            plain = plain if plain is not None else str(value)
    filename = extended if extended is not None else plain
    if "\x00" in name or (filename is not None and "\x00" in filename):
        raise UploadRejected("a part's name or filename contains a NUL byte: rename the file", 422)
    return name, filename


class _Collector:
    """python-multipart callbacks that build the form and note the first reason to refuse."""

    def __init__(self, form: UploadForm, upload_dir: str | None) -> None:
        self.form = form
        self.file_config = _file_config(upload_dir)
        self.error: UploadRejected | None = None
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._filename: str | None = None
        self._file: File | None = None
        self._hash = hashlib.sha256()
        self._size = 0
        self._head = bytearray()
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
        self._head = bytearray()
        self._hash = hashlib.sha256()
        self._size = 0
        self._file = None
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
        try:
            self._name, self._filename = disposition(self._headers.get(b"content-disposition", b""))
        except UploadRejected as exc:
            self._fail(str(exc), exc.status_code)
            return
        if self._name != FILE_FIELD and self._name not in FORM_FIELDS:
            allowed = ", ".join((FILE_FIELD, *FORM_FIELDS))
            self._fail(f"unknown form field {self._name!r}: use {allowed}", 422)
        elif self._name == FILE_FIELD:
            name = (self._filename or "").encode()
            self._file = File(name, FILE_FIELD.encode(), config=self.file_config)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.error is not None:
            return
        chunk = data[start:end]
        if self._file is not None:
            self._file.write(chunk)
            self._hash.update(chunk)
            self._size += len(chunk)
            if not self._magic_checked:
                self._head += chunk[: MAGIC_WINDOW_BYTES - len(self._head)]
                if len(self._head) >= MAGIC_WINDOW_BYTES:
                    self._check_magic()
        elif self._name in FORM_FIELDS:
            self._buf += chunk
            if len(self._buf) > MAX_FIELD_BYTES:
                self._fail(f"{self._name}: longer than {MAX_FIELD_BYTES} bytes", 422)

    def _check_magic(self) -> None:
        if self._magic_checked:
            return
        self._magic_checked = True
        if PDF_MAGIC not in bytes(self._head):
            name = self._filename or "files"
            self._fail(f"{name!r} is not a PDF (no %PDF- header): upload PDF files only", 415)

    def on_part_end(self) -> None:
        self.open_part = False
        if self.error is not None:
            if self._file is not None:
                self._file.close()
            return
        if self._file is not None:
            self._check_magic()
            self._file.finalize()
            if self.error is None:
                index = len(self.form.files) + 1
                name = self._filename or f"document-{index}.pdf"
                self.form.files.append(
                    UploadedFile(name, self._file, self._size, self._hash.hexdigest())
                )
            else:
                self._file.close()
        elif self._name in FORM_FIELDS:
            if self._name in self.form.fields:
                self._fail(f"{self._name}: given more than once; send it once", 422)
            try:
                value = self._buf.decode("utf-8").strip()
            except UnicodeDecodeError:
                self._fail(f"{self._name}: not valid UTF-8 text", 422)
                return
            if "\x00" in value:
                self._fail(f"{self._name}: contains a NUL byte", 422)
            self.form.fields[self._name] = value
        self._buf = bytearray()


async def read_upload(
    headers: dict[str, str],
    stream: AsyncIterator[bytes],
    max_bytes: int,
    gate: UploadGate | None = None,
    upload_dir: str | None = None,
) -> UploadForm:
    """Parse a multipart/form-data body from `stream`, stopping at the first reason to refuse.

    The files are on disk (in `upload_dir`, default the system's temporary directory) when
    this returns: the caller must `close(gate)` the form. Raises
    UploadRejected: 413 past `max_bytes`, 415 for a non-multipart body or a file that is not
    a PDF, 400 for a malformed body, 422 for unknown, repeated or missing fields or a NUL
    byte in a name; HttpError 503 when `gate` has no room for the body.
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
    form = UploadForm()
    try:
        if gate is not None and length.isdigit():
            gate.reserve(int(length))
            form.reserved = int(length)
        await _parse(_Collector(form, upload_dir), boundary, stream, max_bytes, gate)
    except BaseException:
        form.close(gate)
        raise
    return form


async def _parse(
    collector: _Collector,
    boundary: bytes,
    stream: AsyncIterator[bytes],
    max_bytes: int,
    gate: UploadGate | None,
) -> None:
    form = collector.form
    callbacks = {name: getattr(collector, name) for name in (
        "on_part_begin", "on_part_data", "on_part_end", "on_header_field",
        "on_header_value", "on_header_end", "on_headers_finished",
    )}  # fmt: skip
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        async for chunk in stream:
            form.bytes_read += len(chunk)
            if form.bytes_read > max_bytes:
                raise too_large(max_bytes)
            if gate is not None and form.bytes_read > form.reserved:
                grow = form.bytes_read - form.reserved  # a body without Content-Length
                gate.reserve(grow)
                form.reserved += grow
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
    if not form.files:
        raise UploadRejected(f"no files: attach one or more PDFs in the `{FILE_FIELD}` field", 422)
