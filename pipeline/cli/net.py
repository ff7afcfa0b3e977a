"""Binding a listening socket for the commands that serve HTTP (`serve`, `emulator`)."""

from __future__ import annotations

import socket

from pipeline.errors import PipelineError


def bind(host: str, port: int) -> socket.socket:
    """A bound socket, or one clear line saying what to change; port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PipelineError(
            f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port "
            "(or --port 0 for any free one)"
        ) from None
    return sock
