"""The Files API in the emulator: resumable upload, get, delete and download.

What google-genai does (`files.upload`, `_extra_utils.prepare_resumable_upload`,
`_api_client._async_upload_fd`, `files.download`; /work/shared/GEMINI.md §3.5):
- `POST /upload/{version}/files` with `X-Goog-Upload-Protocol: resumable`,
  `X-Goog-Upload-Command: start`, `X-Goog-Upload-Header-Content-Length` and `-Content-Type`
  and a body `{"file": {"displayName", "mimeType", ...}}` → an empty answer whose
  `x-goog-upload-url` header is where the bytes go;
- the bytes, in chunks, `POST` to that URL with `X-Goog-Upload-Command: upload` (the last one
  `upload, finalize`) and `X-Goog-Upload-Offset`; each answer says `x-goog-upload-status:
  active`, the last `final` with `{"file": File}`;
- `GET|DELETE {version}/files/{id}`; `GET {version}/files/{id}:download?alt=media` (also
  under `/download/…`, the `downloadUri` Google gives) returns the bytes of a file the
  service generated (a batch job's responses file).

`generateContent` and `countTokens` read a `fileData.fileUri` part from here (page count
and tokens as for inline data); a file never uploaded or deleted is refused with Google's
403 PERMISSION_DENIED ("… or it may not exist").

A file is kept until deleted (Google keeps 48 h; the emulator lives shorter than that).
The counters (`uploads`, `deleted`, `downloads`, `live`) are in `/_emulator/stats`
under "files".
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from pipeline.llm.emulator.batch_routes import ErrorFn
from pipeline.llm.emulator.content import BadRequest, FileNotAccessible


def _rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class StoredFile:
    name: str  # files/{id}
    mime_type: str
    display_name: str
    data: bytes
    created_at: float
    generated: bool  # written by the service (a responses file): downloadable


@dataclass
class _Session:
    mime_type: str
    display_name: str
    size_bytes: int
    data: bytearray = field(default_factory=bytearray)


@dataclass
class FileStore:
    """Files by name and the uploads under way. Thread-safe: batch answers run in threads."""

    files: dict[str, StoredFile] = field(default_factory=dict)
    sessions: dict[str, _Session] = field(default_factory=dict)
    uploads: int = 0  # finalized uploads
    deleted: int = 0
    downloads: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, mime_type: str, display_name: str, size_bytes: int) -> str:
        upload_id = secrets.token_hex(12)
        with self.lock:
            self.sessions[upload_id] = _Session(mime_type, display_name, size_bytes)
        return upload_id

    def chunk(self, upload_id: str, offset: int, data: bytes, finalize: bool) -> StoredFile | None:
        """Append a chunk at `offset`; the file once finalized, else None. Raises
        BadRequest for an unknown upload, a wrong offset or a size other than announced."""
        with self.lock:
            session = self.sessions.get(upload_id)
            if session is None:
                raise BadRequest(f"upload {upload_id} is not under way")
            if offset != len(session.data):
                raise BadRequest(f"upload offset {offset} but {len(session.data)} bytes received")
            session.data.extend(data)
            if not finalize:
                return None
            del self.sessions[upload_id]
            if len(session.data) != session.size_bytes:
                raise BadRequest(f"upload announced {session.size_bytes} bytes, "
                                 f"received {len(session.data)}")  # fmt: skip
            self.uploads += 1
        return self.add(bytes(session.data), session.mime_type, session.display_name, False)

    def add(self, data: bytes, mime_type: str, display_name: str, generated: bool) -> StoredFile:
        # Lower-case letters and digits: the SDK reads a file id out of a URI by that pattern.
        stored = StoredFile(f"files/{secrets.token_hex(8)}", mime_type, display_name, data,
                            time.time(), generated)  # fmt: skip
        with self.lock:
            self.files[stored.name] = stored
        return stored

    def get(self, name: str) -> StoredFile | None:
        with self.lock:
            return self.files.get(name)

    def delete(self, name: str) -> bool:
        with self.lock:
            if self.files.pop(name, None) is None:
                return False
            self.deleted += 1
            return True

    def download(self, name: str) -> StoredFile | None:
        with self.lock:
            stored = self.files.get(name)
            if stored is not None and stored.generated:
                self.downloads += 1
                return stored
        return None

    def resolve(self, uri: str) -> tuple[bytes, str]:
        """The bytes and MIME type a `fileData.fileUri` (or `files/{id}`) names. Raises
        FileNotAccessible (403, Google's answer) for a file never uploaded or deleted."""
        name = "files/" + uri.rsplit("files/", 1)[-1] if "files/" in uri else uri
        stored = self.get(name)
        if stored is None:
            raise FileNotAccessible(f"You do not have permission to access the File "
                                    f"{name.removeprefix('files/')} or it may not exist.")
        return stored.data, stored.mime_type

    def stats(self) -> dict[str, int]:
        with self.lock:
            return {"uploads": self.uploads, "deleted": self.deleted,
                    "downloads": self.downloads, "live": len(self.files)}  # fmt: skip

    def as_json(self, stored: StoredFile, base_url: str, version: str) -> dict[str, Any]:
        """The File resource as the API returns it."""
        base = base_url.rstrip("/")
        body: dict[str, Any] = {
            "name": stored.name,
            "displayName": stored.display_name,
            "mimeType": stored.mime_type,
            "sizeBytes": str(len(stored.data)),
            "createTime": _rfc3339(stored.created_at),
            "updateTime": _rfc3339(stored.created_at),
            "expirationTime": _rfc3339(stored.created_at + 48 * 3600),
            "uri": f"{base}/{version}/{stored.name}",
            "state": "ACTIVE",
            "source": "GENERATED" if stored.generated else "UPLOADED",
        }
        if stored.generated:
            body["downloadUri"] = f"{base}/download/{version}/{stored.name}:download?alt=media"
        return body


def add_file_routes(app: FastAPI, emulator: Any, error: ErrorFn) -> None:
    """Serve `emulator.files` (a FileStore) on `app`."""

    @app.post("/upload/{version}/files")
    async def upload(version: str, request: Request) -> Response:
        files: FileStore = emulator.files
        upload_id = request.query_params.get("upload_id")
        command = request.headers.get("x-goog-upload-command", "")
        if upload_id is None:  # the start; the URL it returns is the chunks' credential
            denied: JSONResponse | None = emulator.check_key(request)
            if denied is not None:
                return denied
            if request.headers.get("x-goog-upload-protocol") != "resumable" or command != "start":
                return error(400, "the emulator serves resumable uploads only "
                             "(X-Goog-Upload-Protocol: resumable, Command: start)")  # fmt: skip
            body = await request.json() if await request.body() else {}
            meta = (body.get("file") or {}) if isinstance(body, dict) else {}
            mime = request.headers.get("x-goog-upload-header-content-type") or str(
                meta.get("mimeType") or "application/octet-stream")  # fmt: skip
            size = request.headers.get("x-goog-upload-header-content-length", "")
            if not size.isdigit():
                return error(400, "X-Goog-Upload-Header-Content-Length is required")
            new_id = files.start(mime, str(meta.get("displayName") or ""), int(size))
            url = f"{str(request.base_url).rstrip('/')}/upload/{version}/files?upload_id={new_id}"
            return JSONResponse({}, headers={"x-goog-upload-url": url,
                                             "x-goog-upload-status": "active"})  # fmt: skip
        offset = request.headers.get("x-goog-upload-offset", "0")
        try:
            stored = files.chunk(upload_id, int(offset) if offset.isdigit() else -1,
                                 await request.body(), "finalize" in command)  # fmt: skip
        except BadRequest as exc:
            return error(400, str(exc))
        if stored is None:
            return Response(headers={"x-goog-upload-status": "active"})
        return JSONResponse({"file": files.as_json(stored, str(request.base_url), version)},
                            headers={"x-goog-upload-status": "final"})  # fmt: skip

    async def _get(version: str, target: str, request: Request) -> Response:
        denied: JSONResponse | None = emulator.check_key(request)
        if denied is not None:
            return denied
        files: FileStore = emulator.files
        file_id, _, method = target.partition(":")
        if method == "download":
            stored = files.download(f"files/{file_id}")
            if stored is None:
                return error(404, f"File files/{file_id} not found or not downloadable.")
            return Response(stored.data, media_type=stored.mime_type)
        if method:
            return error(404, f"Method {target!r} is not served by the emulator.")
        found = files.get(f"files/{file_id}")
        if found is None:
            return error(404, f"File files/{file_id} not found.")
        return JSONResponse(files.as_json(found, str(request.base_url), version))

    @app.get("/{version}/files/{target}")
    async def file_get(version: str, target: str, request: Request) -> Response:
        return await _get(version, target, request)

    @app.get("/download/{version}/files/{target}")
    async def file_download(version: str, target: str, request: Request) -> Response:
        return await _get(version, target, request)

    @app.delete("/{version}/files/{file_id}")
    async def file_delete(version: str, file_id: str, request: Request) -> Response:
        denied: JSONResponse | None = emulator.check_key(request)
        if denied is not None:
            return denied
        if not emulator.files.delete(f"files/{file_id}"):
            return error(404, f"File files/{file_id} not found.")
        return JSONResponse({})
