"""How the offline analyzer names pages, and its model version: small and free of the
analyzer's libraries, so the commands that show results (`status`, `results`, the API) read
them without importing numpy, sumy, YAKE or dateparser (~0.2 s of CPU per command).
"""

from __future__ import annotations

from pipeline.words import counted

OCR_NOTE = "OCR is not available offline"
MODEL_VERSION = "offline"  # pipeline/llm/caller.py prices this version at $0


def page_ranges(pages: list[int]) -> list[tuple[int, int]]:
    """Sorted page numbers as (first, last) runs: [1, 2, 3, 7] -> [(1, 3), (7, 7)]."""
    runs: list[tuple[int, int]] = []
    for page in sorted(set(pages)):
        if runs and page == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], page)
        else:
            runs.append((page, page))
    return runs


def describe_pages(pages: list[int], max_runs: int = 12) -> str:
    """"page 4" or "pages 1–3, 7"; past `max_runs` runs, "… (N pages in all)"."""
    runs = page_ranges(pages)
    text = ", ".join(str(a) if a == b else f"{a}–{b}" for a, b in runs[:max_runs])
    if len(runs) > max_runs:
        text += f", … ({counted(len(set(pages)), 'page')} in all)"
    return ("page " if len(set(pages)) == 1 else "pages ") + text


def no_text_note(pages: list[int]) -> str:
    """The sentence that reports pages without a text layer, for the result's reader."""
    pronoun = "it was" if len(pages) == 1 else "they were"
    return f"No text layer on {describe_pages(pages)}; {OCR_NOTE}, so {pronoun} not read."
