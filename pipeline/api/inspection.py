"""PDF inspection for the HTTP API, in a bounded pool of processes with limits per document.

An upload is inspected (page count, structure, hash) before it is accepted, and a hostile
PDF can make that cost tens of seconds and hundreds of MB. Run in the API's thread pool, a
few such uploads held every request thread and slowed even /healthz. Here at most
`inspect_workers` documents are inspected at once, each in a pool process under a time and
memory limit (tasks/pdf_guard.py), so the event loop, the health check and the read routes
never wait on one; a document past a limit is refused with the reason.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pipeline.errors import BadDocument, Retry
from pipeline.queue.pool import CpuPool
from pipeline.settings import Settings
from tasks.submission import Upload

_GUARD = "tasks.pdf_guard:inspect_limited"
# The in-process limit is CPU time; the API's own wait is a backstop in wall time for a
# process that stops answering (stuck in C code, say), so it allows for a busy machine:
# a process sharing the CPU with others, or still starting, needs several times its CPU
# time in wall time.
_BACKSTOP_FACTOR = 10.0
_BACKSTOP_GRACE_S = 60.0


class InspectionPool:
    """`inspect(upload, settings, model)` -> (page count, sha256), or BadDocument: the
    submission's `Inspector` (tasks/submission.py), with its validity rule.

    One per API process (started lazily, `close()` at shutdown)."""

    def __init__(self, settings: Settings, max_tasks_per_child: int = 20) -> None:
        self.workers = settings.inspect_workers
        self.timeout_s = settings.inspect_timeout_s
        self.memory_mb = settings.inspect_memory_mb
        self.pool = CpuPool(self.workers, max_tasks_per_child)
        self._slots: asyncio.Semaphore | None = None

    async def inspect(self, upload: Upload, s: Settings, model: str) -> tuple[int, str]:
        from tasks.plan import analyze_prompt, part_room_bytes

        if self._slots is None:
            self._slots = asyncio.Semaphore(self.workers)
        room = part_room_bytes(model, analyze_prompt(), upload.name, s.max_inline_request_bytes)
        source: str | bytes = upload.path or upload.data
        async with self._slots:
            try:
                info: dict[str, Any] = await asyncio.wait_for(
                    self.pool.run(_GUARD, source, s.max_upload_bytes, s.max_document_pages,
                                  upload.name, self.timeout_s, self.memory_mb, room),
                    self.timeout_s * _BACKSTOP_FACTOR + _BACKSTOP_GRACE_S,
                )  # fmt: skip
            except TimeoutError:
                self.pool.kill()
                raise BadDocument(
                    f"{upload.name} could not be read: the process reading it stopped "
                    "answering; it was refused. Save it again from the program that made it"
                ) from None
            except Retry:  # the process died under it (killed, out of memory)
                raise BadDocument(
                    f"{upload.name} could not be read: the process reading it died (a PDF far "
                    "more complex than its size); it was refused"
                ) from None
        return int(info["page_count"]), str(info["sha256"])

    def close(self) -> None:
        self.pool.shutdown()
