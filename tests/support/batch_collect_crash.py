"""Imported by a `pipeline worker --import tests.support.batch_collect_crash` that must die
in the middle of collecting a Gemini batch job: its ledger's `settled` SIGKILLs the process
right after the first Batch Mode request's row is settled, so the group's other rows are
still `started` and nothing marks the group booked. Only the crash is injected; the row
itself is written to the ledger as usual."""

from __future__ import annotations

import os
import signal

from pipeline.ledger.recorder import SqlRecorder
from pipeline.llm.attempts import CallAttempt

_settled = SqlRecorder.settled


async def _settled_then_die(self: SqlRecorder, call: CallAttempt) -> None:
    await _settled(self, call)
    if call.mode == "batch":  # pipeline.llm.attempts.BATCH_MODE
        os.kill(os.getpid(), signal.SIGKILL)


SqlRecorder.settled = _settled_then_die  # type: ignore[method-assign]
