"""An ASGI app under a real uvicorn in a thread of the test process, on a free 127.0.0.1 port."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Literal

from starlette.types import ASGIApp


@contextlib.contextmanager
def uvicorn_in_thread(
    app: ASGIApp,
    *,
    lifespan: Literal["auto", "on", "off"] = "on",
    what: str = "server",
    start_timeout_s: float = 30.0,
) -> Iterator[str]:
    """Yields the base URL; the server is stopped and the port released after the block."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # A request still in flight when the block ends (an emulator call a cancelled job left,
    # sleeping out its latency) is cut after a second: the test is over, and uvicorn would
    # otherwise wait for it (up to the join's 30 s).
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan,
                                          timeout_graceful_shutdown=1))  # fmt: skip
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the {what} did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
