"""`inspect_pdf` under a time and a memory limit, for files from strangers (the HTTP API).

A small PDF can be expensive to open: a 15 KB file whose cross-reference stream declares
two million objects makes pypdf build two million entries (tens of seconds, 220 MB). So the
API inspects uploads in pool processes (pipeline/api/inspection.py) that run this function:
the address space may grow by at most `memory_mb` (RLIMIT_AS, so an allocation past it
fails with MemoryError instead of growing the process) and the CPU time it spends is capped
by SIGPROF (pypdf is pure Python, so the signal interrupts it between bytecodes). CPU time,
not the wall clock: on a busy machine a valid PDF must not be refused because other
processes had the CPU; the cost a stranger can impose is the CPU it makes us spend. Either way
the document is refused with BadDocument saying which limit it hit; the process recovers
and the limits are lifted again before it takes the next document.
"""

from __future__ import annotations

import os
import resource
import signal
from pathlib import Path
from types import FrameType
from typing import Any

from pipeline.errors import BadDocument
from tasks.pdf import inspect_pdf


class _TimeUp(BaseException):
    """Not an Exception: pypdf's own `except Exception` must not swallow the alarm."""


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise _TimeUp()


def _address_space_bytes() -> int:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[0])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _out_of_memory(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MemoryError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def inspect_limited(
    source: str | bytes,
    max_bytes: int,
    max_pages: int,
    name: str,
    timeout_s: float,
    memory_mb: int,
    max_part_bytes: int | None = None,
) -> dict[str, Any]:
    """`inspect_pdf(...).to_dict()` of `source` (a file path, or the bytes), or BadDocument
    when the document is unusable or needs more than `timeout_s` seconds or `memory_mb` MB
    of address space to read. `timeout_s` is CPU seconds of this process (user + system,
    ITIMER_PROF). `max_part_bytes` is inspect_pdf's."""
    data = Path(source).read_bytes() if isinstance(source, str) else source
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _address_space_bytes() + memory_mb * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    previous = signal.signal(signal.SIGPROF, _on_alarm)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    signal.setitimer(signal.ITIMER_PROF, timeout_s)
    try:
        return inspect_pdf(data, max_bytes, max_pages, name, max_part_bytes).to_dict()
    except _TimeUp:
        raise BadDocument(
            f"{name} takes more than {timeout_s:g} s of CPU to read (its structure is far more "
            "complex than its size suggests, e.g. a cross-reference table declaring millions "
            "of objects); it was refused. Save it again from the program that made it "
            "(PIPELINE_INSPECT_TIMEOUT_S is the server's limit)"
        ) from None
    except (MemoryError, BadDocument) as exc:
        if not _out_of_memory(exc):
            raise
        raise BadDocument(
            f"{name} needs more than {memory_mb} MB to read (its structure is far more complex "
            "than its size suggests); it was refused. Save it again from the program that "
            "made it (PIPELINE_INSPECT_MEMORY_MB is the server's limit)"
        ) from None
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
