"""pipeline: a cost-aware batch pipeline for slow, paid LLM calls.

The public Python API, re-exported from the queue (imported on first use, so the CLI and
the worker start without loading what they do not need):

    from pipeline import QueueClient, JobOptions, task, Worker

Layers, top to bottom (checked by import-linter, see pyproject.toml): `cli`, `api` →
`tasks` (documents, a separate top-level package) → `services` → `ledger` → `llm` →
`queue` → `redis` → `settings` → `errors`, `resources`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.queue import GroupHandle, JobHandle, JobOptions, QueueClient, Worker
    from pipeline.queue import task as task  # type: ignore[no-redef]  # (the function, not the module)

__all__ = ["GroupHandle", "JobHandle", "JobOptions", "QueueClient", "Worker", "task"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("pipeline.queue"), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
