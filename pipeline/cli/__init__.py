"""The `pipeline` command line; app.py holds the command table, one module per command group.

Layer: the top. It may import everything below (tasks, services, ledger, llm, queue).
"""

from pipeline.cli.app import app, main

__all__ = ["app", "main"]
