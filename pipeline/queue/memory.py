"""Large buffers handed back to the OS when freed (glibc's mmap threshold, fixed).

glibc serves an allocation of at least M_MMAP_THRESHOLD with its own mmap, unmapped on free.
The threshold starts at 128 KiB but is dynamic: each time such a block is freed it rises to
that block's size (up to 32 MiB on 64-bit), so after the first PDF is freed, the next PDFs,
their base64 text and upload chunks come from the heap, and freed heap memory in the middle
of an arena stays with the process (mallopt(3), "M_MMAP_THRESHOLD"). A worker that reads
14 MB PDFs for 32 jobs kept ~380 MB of such freed memory at its peak (`python
bench/documents.py --only worker`, 2026-11-30: peak PSS 1,352 MB with the dynamic threshold,
974 MB with it fixed at 1 MiB). Setting it explicitly also turns the dynamic rise off.

mallopt is looked up in the C library the interpreter already runs on (`CDLL(None)`), not
found by name: `ctypes.util.find_library("c")` runs `/sbin/ldconfig -p` in a subprocess,
once at every worker start and in every CPU-pool child.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # <malloc.h>
LARGE_BUFFER_BYTES = 1024 * 1024


def return_large_buffers(threshold_bytes: int = LARGE_BUFFER_BYTES) -> bool:
    """Make every allocation of `threshold_bytes` or more its own mapping, returned to the OS
    on free, for the rest of this process. True when set; False off glibc (musl, macOS),
    where nothing is changed."""
    if not _on_glibc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # this process's own symbols: glibc's mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, threshold_bytes))
    if not ok:
        log.debug("mallopt(M_MMAP_THRESHOLD, %d) refused", threshold_bytes)
    return ok


def _on_glibc() -> bool:
    """True when this interpreter runs on glibc (musl and macOS have no such confstr name)."""
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError, AttributeError):
        return False
