"""pipeline/queue/memory.py: the mmap threshold is set on glibc, without searching for libc."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import ROOT


def _glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError, AttributeError):
        return False


@pytest.mark.skipif(not _glibc(), reason="mallopt(M_MMAP_THRESHOLD) is glibc's")
def test_the_threshold_is_set_from_the_interpreters_own_libc() -> None:
    # A fresh interpreter: whether ctypes.util (find_library, which runs `ldconfig -p` in a
    # subprocess) got imported is only visible in a process that had not loaded it before.
    code = (
        "import sys\n"
        "from pipeline.queue.memory import return_large_buffers\n"
        "print(return_large_buffers(), 'ctypes.util' in sys.modules)\n"
    )
    ran = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["True", "False"]
