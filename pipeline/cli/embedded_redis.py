"""`pipeline redis start|stop|status`: manage the private redis-server under PIPELINE_HOME.

The server outlives the process that started it (see pipeline/redis/server.py for why),
so stopping it is an explicit act; SHUTDOWN makes Redis fsync its append-only file first.
"""

from __future__ import annotations

import typer

from pipeline.redis.server import EmbeddedRedis
from pipeline.settings import get_settings

redis_app = typer.Typer(
    help="The private redis-server used when PIPELINE_REDIS_URL is unset.",
    no_args_is_help=True,
)


def _server() -> EmbeddedRedis:
    return EmbeddedRedis(get_settings().home)


@redis_app.command("start")
def start() -> None:
    """Start the server for this PIPELINE_HOME (or reuse the running one); print its URL."""
    server = _server()
    url = server.start()
    typer.echo(f"{url} (pid {server.pid})")


@redis_app.command("stop")
def stop() -> None:
    """SHUTDOWN the server for this PIPELINE_HOME, saving its append-only file."""
    server = _server()
    if server.stop():
        typer.echo(f"stopped redis-server under {server.dir}")
    else:
        typer.echo(f"no redis-server running under {server.dir}")


@redis_app.command("status")
def status() -> None:
    """Say whether the server for this PIPELINE_HOME is running, and where."""
    server = _server()
    if server.ping():
        typer.echo(f"running: {server.url} (pid {server.pid})")
    else:
        typer.echo(f"not running (would use {server.url})")
        raise typer.Exit(1)
