"""The `pipeline` command line; app.py holds the command table, one module per command group.

Layer: the top. It may import everything below (tasks, services, ledger, llm, queue).
"""

from typing import Any

from pipeline.cli.app import main

__all__ = ["app", "main"]
# importing the submodule bound its name here; `app` means the Typer application
globals().pop("app", None)


def __getattr__(name: str) -> Any:
    """`app` is built on first use: `main()` builds only the command it runs."""
    if name == "app":
        import importlib

        return importlib.import_module("pipeline.cli.app").app
    raise AttributeError(name)
