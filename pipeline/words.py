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


# The retry a document that ended without a result can be given: the command's flag and the
# HTTP API's field (pipeline/api/batches.py RetryRequest).
_RETRY_FIELDS = {"failed": "failed", "over-budget": "over_budget"}


def retry_command(ref: str, which: str | None = None) -> str:
    """Both doors that retry a batch's documents that ended `which` ("failed" or
    "over-budget"; None: every one that ended without a result), for a CLI user and an API
    user alike: "`pipeline retry 1a2b --failed` (over the HTTP API: POST
    /batches/1a2b/retry with {"failed": true})". `ref` is the batch's id or short id. Raises
    KeyError for another `which`."""
    if which is None:
        return (f"`pipeline retry {ref}` (over the HTTP API: POST /batches/{ref}/retry with "
                "{})")
    return (f"`pipeline retry {ref} --{which}` (over the HTTP API: POST /batches/{ref}/retry "
            f'with {{"{_RETRY_FIELDS[which]}": true}})')
