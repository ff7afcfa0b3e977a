"""Is the provider there at all? A quick probe before a batch waits on it.

A provider that cannot be reached (no emulator started, a wrong GOOGLE_GEMINI_BASE_URL, no
network) otherwise shows only as jobs retrying with back-off for minutes. One GET to its base
URL with a short timeout tells the user within seconds, with the whole reason. Any HTTP answer
(even 404) means reachable: only a failure to connect or to answer counts.
"""

from __future__ import annotations

import os

import httpx

from pipeline.settings import Settings

GEMINI_URL = "https://generativelanguage.googleapis.com"


def provider_endpoint(settings: Settings) -> tuple[str, str] | None:
    """(what, base URL) of the provider this process would call, None for the offline one."""
    from pipeline.llm.factory import EMULATOR_DEFAULT_URL, _has_key

    choice = settings.provider
    if choice == "auto":
        choice = "gemini" if _has_key() else "offline"
    if choice == "offline":
        return None
    if choice == "emulator":
        url = os.environ.get("GOOGLE_GEMINI_BASE_URL") or EMULATOR_DEFAULT_URL
        return "the Gemini emulator (PIPELINE_PROVIDER=emulator)", url
    return "the Gemini API", os.environ.get("GOOGLE_GEMINI_BASE_URL") or GEMINI_URL


async def unreachable(settings: Settings, timeout_s: float = 3.0) -> str | None:
    """None when the provider answers (or is the offline analyzer), else the whole reason."""
    target = provider_endpoint(settings)
    if target is None:
        return None
    what, url = target
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            await client.get(url)
    except httpx.HTTPError as exc:
        detail = str(exc) or "no answer"
        return (
            f"cannot reach {what} at {url}: {type(exc).__name__}: {detail}; its jobs wait and "
            "retry with back-off until it answers (start it, or fix GOOGLE_GEMINI_BASE_URL / "
            "PIPELINE_PROVIDER)"
        )
    return None
