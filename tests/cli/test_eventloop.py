"""The long-lived commands' event loop (pipeline/cli/eventloop.py): asyncio's own, the loop
on which a waiting job's timers cost least (the module says what was measured)."""

from __future__ import annotations

import asyncio

from pipeline.cli import eventloop


async def _loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_the_worker_loop_is_asyncios_and_returns_what_main_returns() -> None:
    assert eventloop.run(_loop_module()).startswith("asyncio")
