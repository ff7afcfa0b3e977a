"""Which provider a process uses: Gemini with a key, the emulator on request, else offline.

A fresh machine without a key must still run the main job, but a user must never believe
they got Gemini's answer when they got the offline analyzer's, so the fallback is announced
on stderr, once per process.
"""

from __future__ import annotations

import os
import sys

from pipeline.llm.provider import Provider
from pipeline.settings import Settings

EMULATOR_DEFAULT_URL = "http://127.0.0.1:8089"
EMULATOR_DEFAULT_KEY = "emulator-key"
_announced = False


def _has_key() -> bool:
    return bool(os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY"))


def provider_kind(settings: Settings) -> str:
    """Which provider `make_provider` gives for these settings and this environment, without
    making it: "gemini", "emulator" or "offline" (PIPELINE_PROVIDER; auto: gemini if a key is
    set, else offline). Part of a document's idempotency key (tasks/plan.py), so an answer
    from one never stands for another's."""
    if settings.provider == "auto":
        return "gemini" if _has_key() else "offline"
    return settings.provider


def make_provider(settings: Settings) -> Provider:
    """The provider named by PIPELINE_PROVIDER (auto: gemini if a key is set, else offline)."""
    choice = provider_kind(settings)
    if choice == "offline" and settings.provider == "auto":
        _announce_offline()
    if choice == "offline":
        from pipeline.llm.offline import OfflineProvider

        return OfflineProvider()
    from pipeline.llm.gemini import GeminiProvider, api_key_from_env

    files_min_bytes = settings.files_api_min_bytes
    if choice == "emulator":
        base_url = os.environ.get("GOOGLE_GEMINI_BASE_URL") or EMULATOR_DEFAULT_URL
        return GeminiProvider(api_key=api_key_from_env() or EMULATOR_DEFAULT_KEY,
                              base_url=base_url, files_min_bytes=files_min_bytes,
                              name="emulator")  # fmt: skip
    return GeminiProvider(files_min_bytes=files_min_bytes)


def _announce_offline() -> None:
    global _announced
    if _announced:
        return
    _announced = True
    print(
        "pipeline: no GEMINI_API_KEY/GOOGLE_API_KEY set - using the OFFLINE analyzer "
        "(local extractive analysis, $0, not Gemini). Set a key for Gemini answers.",
        file=sys.stderr,
        flush=True,
    )
