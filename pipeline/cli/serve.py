"""`pipeline serve`: the HTTP API under uvicorn.

Without PIPELINE_API_KEYS anyone who can reach the port could spend the Gemini budget, so
the server then refuses any address beyond loopback rather than trusting a firewall.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

import typer

from pipeline.cli.common import LogLevel
from pipeline.cli.net import bind
from pipeline.settings import get_settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="0 picks a free port.")] = 8000,
    log_level: Annotated[
        LogLevel, typer.Option(case_sensitive=False, help="How much uvicorn logs.")
    ] = LogLevel.info,
) -> None:
    """Serve the HTTP API (POST /analyze, GET /jobs/{id}, /batches/{id}, /costs, /metrics)."""
    settings = get_settings()
    if not settings.api_key_list and not is_loopback(host):
        # One unwrapped line (rich would wrap it at the terminal width), then exit 1.
        typer.echo(
            f"error: refusing to listen on {host} without API keys: set PIPELINE_API_KEYS "
            "(comma-separated) or use --host 127.0.0.1",
            err=True,
        )
        raise typer.Exit(1)
    import uvicorn

    from pipeline.api.app import create_app

    sock = bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"pipeline API listening on http://{shown}:{bound}", err=True)
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), log_level=log_level.value, lifespan="on")
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
