"""Imported by a `pipeline worker --import tests.support.batch_crash` that must die the
instant its batch job exists at Google's side and before it is recorded anywhere: its
`GeminiBatches.create` SIGKILLs the process right after the API call returns. Only the crash
is injected; the call itself goes through google-genai to the emulator."""

from __future__ import annotations

import os
import signal
from typing import Any

from pipeline.llm.batch import GeminiBatches

_create = GeminiBatches.create


async def _create_then_die(self: GeminiBatches, *args: Any, **kwargs: Any) -> Any:
    await _create(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)


GeminiBatches.create = _create_then_die  # type: ignore[method-assign]
