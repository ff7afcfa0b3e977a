"""The long-lived commands' event loop (pipeline/cli/eventloop.py): uvloop where installed."""

from __future__ import annotations

import asyncio

from pipeline.cli import eventloop


async def _loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_the_worker_loop_is_uvloop_and_returns_what_main_returns() -> None:
    assert eventloop.loop_factory() is not None, "uvloop is a dependency on this platform"
    assert eventloop.run(_loop_module()).startswith("uvloop")
    assert asyncio.run(_loop_module()).startswith("asyncio")  # the default is left alone
