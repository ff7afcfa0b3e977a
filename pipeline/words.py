"""Counts in sentences: "1 page", "2 pages", never "1 pages" or "page(s)".

Foundation layer (imports nothing of the project), so the CLI, the API, the documents layer
and the queue's log lines all say a count the same way.
"""

from __future__ import annotations

# Nouns whose plural is not the singular + "s".
_IRREGULAR = {"batch": "batches", "entry": "entries", "body": "bodies"}


def plural(n: int, singular: str, many: str | None = None) -> str:
    """`singular` when `n` is 1 (or -1), else `many` (default: the singular + "s", or its
    irregular plural): `plural(1, "page")` is "page", `plural(0, "batch")` is "batches"."""
    if abs(n) == 1:
        return singular
    return many or _IRREGULAR.get(singular, singular + "s")


def counted(n: int, singular: str, many: str | None = None) -> str:
    """`n` and its noun: `counted(1, "document")` is "1 document", `counted(3, "part")` is
    "3 parts"; `many` names an irregular plural ("running job", "running jobs" needs none)."""
    return f"{n} {plural(n, singular, many)}"
