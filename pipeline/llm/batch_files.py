"""Batch Mode input and output files through the Gemini Files API (google-genai `files`).

A batch's inline requests must stay under 20 MB together (GEMINI.md §3.6); a larger group
goes as a JSONL input file of up to 2 GB, uploaded with the SDK's resumable upload, one
`{"key": …, "request": GenerateContentRequest}` a line (ai.google.dev/gemini-api/docs/
batch-mode, "input file"). A line whose request would still be too large sends its PDF as
an uploaded file of its own (`fileData.fileUri`) instead of inline base64. The finished job
names a responses file (`dest.file_name`), one `{"key", "response"|"error"}` a line, read
with `files.download`. Uploaded files cost nothing and Google deletes them after 48 h; the
group (batch_group.py) deletes them as soon as its job is booked.
"""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable
from dataclasses import dataclass

from google import genai
from google.genai import types

from pipeline.llm.failure import ProviderCallError
from pipeline.llm.gemini import parse_api_error
from pipeline.llm.provider import file_gone


@dataclass(frozen=True)
class UploadedFile:
    """A file at Google's side: `name` (files/…) to get or delete it, `uri` to cite it."""

    name: str
    uri: str


def parse_responses(data: bytes) -> tuple[list[tuple[str, dict[str, object] | None,
                                                      dict[str, object] | None]], int]:  # fmt: skip
    """(key, response, error) for each line of a responses file, and how many lines were
    not JSON: answers Google sent (and billed) whose key cannot be read, so the requests
    left without an answer may be theirs (batch_group.collect books them so)."""
    out: list[tuple[str, dict[str, object] | None, dict[str, object] | None]] = []
    unreadable = 0
    for line in data.decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            unreadable += 1
            continue
        if not isinstance(item, dict):
            continue
        key = str(item.get("key") or (item.get("metadata") or {}).get("key") or "")
        response, error = item.get("response"), item.get("error")
        out.append((key, response if isinstance(response, dict) else None,
                    error if isinstance(error, dict) else None))  # fmt: skip
    return out, unreadable


def to_response(body: dict[str, object]) -> types.GenerateContentResponse:
    """A responses file's `response` object (REST JSON) as the SDK's type."""
    return types.GenerateContentResponse._from_response(response=body, kwargs={})


class BatchFiles:
    """The Files API calls Batch Mode makes. Every method raises ProviderCallError (with
    `.failure`) when the call fails."""

    def __init__(self, client: genai.Client) -> None:
        self._client = client

    async def upload(self, data: bytes | str, mime_type: str, display_name: str) -> UploadedFile:
        """Upload `data`, or the file at the path `data` names (the SDK streams it 8 MB a
        chunk, so its bytes are never all in memory). A file that cannot be read (gone from
        the document store) is DocumentMissing: bad input, not a failed upload."""
        config = types.UploadFileConfig(mime_type=mime_type, display_name=display_name)
        source = data if isinstance(data, str) else io.BytesIO(data)
        try:
            found = await self._client.aio.files.upload(file=source, config=config)
        except OSError as exc:
            # the SDK stats and opens the path itself; its HTTP errors are httpx's, not OSError
            if not isinstance(data, str):
                raise ProviderCallError(parse_api_error(exc)) from exc
            raise file_gone(data, exc) from None
        except Exception as exc:
            raise ProviderCallError(parse_api_error(exc)) from exc
        return UploadedFile(found.name or "", found.uri or "")

    async def exists(self, name: str) -> bool:
        """Whether the file is still there (False when deleted or expired)."""
        return await _unless_gone(self._client.aio.files.get(name=name))

    async def delete(self, name: str) -> bool:
        """Delete a file; False when it was gone already."""
        return await _unless_gone(self._client.aio.files.delete(name=name))

    async def download(self, name: str) -> bytes:
        try:
            return await self._client.aio.files.download(file=name)
        except Exception as exc:
            raise ProviderCallError(parse_api_error(exc)) from exc


async def _unless_gone(call: Awaitable[object]) -> bool:
    """True once `call` succeeded, False when the file is gone: a 404, or the 403 Google
    answers for a file that is not there ("You do not have permission to access the File …
    or it may not exist", google-gemini/deprecated-generative-ai-js#236); raises
    ProviderCallError otherwise."""
    try:
        await call
    except Exception as exc:
        failure = parse_api_error(exc)
        if failure.code == 404 or (failure.code == 403 and "may not exist" in failure.message):
            return False
        raise ProviderCallError(failure) from exc
    return True
