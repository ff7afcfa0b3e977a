"""Large PDFs of an interactive call sent through the Files API instead of inline base64.

Inline, google-genai holds a request's PDF several times while it sends it: our bytes, the
base64 text in its request dict and its JSON body (`json.dumps(...).encode()`), made once for
countTokens and again for generateContent, on the event loop (README, "What the unmet
targets need"). Google also refuses inline requests over its limit and tells to use the
Files API above 50 MB for PDFs (GEMINI.md §3.5). So a data part of at least
`min_bytes` is uploaded once per call (`files.upload`: a resumable upload the SDK sends in
8 MB chunks, `_api_client.CHUNK_SIZE`) and both countTokens and generateContent cite it as
`fileData.fileUri`: the request bodies then carry a URI, not the PDF.

A part read from a file (`Part.pdf_file`: a document in the store, by path and digest) is
uploaded from its path: the SDK streams it 8 MB a chunk, so the call never holds the PDF,
and its digest is the one given, not computed. A part whose bytes are in memory is
uploaded from them (an `io.BytesIO` over the part's own bytes, which CPython does not copy).

Lifecycle (one `CallFiles` per `LLMCaller.call`): the upload happens at the first attempt
that needs the part, before its permit and budget hold are taken (an upload is a round trip
a permit must not wait on, and it is free: nothing to book); retries of the call reuse the
file; the caller deletes it once the call's outcome is booked (`release`), a file already
gone counting as deleted. A worker that dies in between leaves files behind that nothing
deletes: Google keeps an uploaded file 48 h and then removes it, free of charge (20 GB per
project, GEMINI.md §3.5), so a crash costs no money, only storage room for two days.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from google import genai

from pipeline.llm.batch_files import BatchFiles, UploadedFile
from pipeline.llm.failure import ProviderCallError
from pipeline.llm.provider import LLMRequest, Part

log = logging.getLogger(__name__)


# Why parts from 4 MB go as files (gemini.DEFAULT_FILES_MIN_BYTES, PIPELINE_FILES_API_MIN_BYTES):
# below it a PDF stays inline, as an upload adds two round trips (the resumable start, then one
# chunk up to the SDK's 8 MB) and a delete, while inline copies stay small (~4 x 4 MB for one
# call). Above it, 32 calls of 14 MB PDFs held ~8.75 x their bytes inline (bench/documents.py
# --only worker, README). Far under Google's advice (Files API above 50 MB for PDFs, GEMINI.md
# §3.5), which is about what the service accepts, not memory.
def goes_as_file(part: Part, min_bytes: int) -> bool:
    """Whether this part is sent through the Files API (a data part of >= min_bytes)."""
    return part.has_bytes and part.file_uri is None and part.byte_size >= min_bytes


def _sha256(part: Part) -> str:
    return part.digest().hex()


class CallFiles:
    """The uploaded files of one call. `request()` is the request to send (uploading the
    large parts at its first use; ProviderCallError when an upload fails, so the caller's
    retry policy treats it like any failed attempt); `release()` deletes them."""

    def __init__(self, client: genai.Client, request: LLMRequest, min_bytes: int) -> None:
        self._files = BatchFiles(client)
        self._request = request
        self._min_bytes = min_bytes
        self._sent: LLMRequest | None = None
        self._uploaded: dict[str, UploadedFile] = {}  # sha256 -> file
        self._lock = asyncio.Lock()

    @property
    def needed(self) -> bool:
        """Whether the request has a part to upload that was not uploaded yet."""
        return self._sent is None and any(goes_as_file(p, self._min_bytes)
                                          for p in self._request.parts)  # fmt: skip

    @property
    def uploaded(self) -> list[UploadedFile]:
        return list(self._uploaded.values())

    async def request(self) -> LLMRequest:
        """The request with every large data part as a file reference (uploaded once)."""
        async with self._lock:
            if self._sent is not None:
                return self._sent
            parts = []
            for part in self._request.parts:
                if not goes_as_file(part, self._min_bytes):
                    parts.append(part)
                    continue
                # a file part's digest is given; hashlib releases the GIL for in-memory
                # bytes, so a 14 MB PDF's digest does not hold the loop
                sha = part.sha256
                if sha is None:
                    sha = await asyncio.to_thread(_sha256, part)
                found = self._uploaded.get(sha)
                if found is None:
                    mime = part.mime_type or "application/pdf"
                    source = part.path if part.path is not None else part.data
                    assert source is not None
                    found = await self._files.upload(source, mime, f"pipeline-{sha[:32]}")
                    self._uploaded[sha] = found
                parts.append(dataclasses.replace(part, file_uri=found.uri))
            self._sent = dataclasses.replace(self._request, parts=tuple(parts))
            return self._sent

    async def release(self) -> None:
        """Delete every uploaded file; one already gone is fine. A delete that fails is
        logged, not raised: the call's outcome is booked already, and Google removes the
        file after 48 h anyway."""
        uploaded, self._uploaded = self._uploaded, {}
        self._sent = None
        for found in uploaded.values():
            try:
                await self._files.delete(found.name)
            except ProviderCallError as exc:
                log.warning("could not delete uploaded file %s (%s); Google removes it "
                            "after 48 h", found.name, exc.failure.message)  # fmt: skip
