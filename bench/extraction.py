"""Text extraction: pypdf against PDFium (pypdfium2), time per page and peak memory.

    python bench/extraction.py [--pages 2415] [--repeats 3] [--pypdf-max-pages 500]

The corpus is every sample in examples/docs/ plus a generated maintenance manual of
--pages pages (examples/make_samples.py's `long_manual`, distinct text on every page).
Each (library, document) pair runs in a fresh Python process, so one library's caches and
imports never count against the other: the child loads the library, notes its resident
set (VmRSS), extracts the text --repeats times (the manual once) and reports the best
CPU time (process time: steadier than wall time on a shared machine; wall time is kept
too) and its peak resident set (VmHWM). Memory is that peak minus the resident set after
import: what extraction itself added.

pypdf is driven the way tasks/pdf.py drove it before PDFium: a fresh reader every 100
pages, which bounds pypdf's object cache; PDFium the way tasks/pdf.py drives it now. To
keep a run near a minute, pypdf reads only the manual's first --pypdf-max-pages pages
(0: all of them; its per-page time only grows further in); PDFium reads them all.
Prints a table and writes bench/results/extraction.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Import from the checkout, and keep bench/ itself off the path so nothing in it shadows a module.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.common import ROOT, rss_mb, write_result  # noqa: E402

LIBRARIES = ("pypdf", "pypdfium2")
PYPDF_PAGES_PER_READER = 100


def _extract_pypdf(data: bytes, max_pages: int) -> list[str]:
    import io

    from pypdf import PdfReader

    count = len(PdfReader(io.BytesIO(data)).pages)
    count = min(count, max_pages) if max_pages else count
    texts: list[str] = []
    reader = None
    for index in range(count):
        if index % PYPDF_PAGES_PER_READER == 0:
            reader = PdfReader(io.BytesIO(data))
        assert reader is not None
        texts.append(reader.pages[index].extract_text() or "")
    return texts


def _extract_pdfium(data: bytes, max_pages: int) -> list[str]:
    from tasks.pdf import extract_text

    return extract_text(data)


def child(library: str, path: str, repeats: int, max_pages: int) -> dict[str, Any]:
    """Runs in the measuring process: extract `path` with `library`, report figures."""
    extract = _extract_pypdf if library == "pypdf" else _extract_pdfium
    if library == "pypdf":
        import pypdf  # noqa: F401
    else:
        import pypdfium2  # noqa: F401

        import tasks.pdf  # noqa: F401
    data = Path(path).read_bytes()
    base_mb = rss_mb(_self(), "VmRSS")
    cpu, wall = [], []
    pages: list[str] = []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        pages = extract(data, max_pages)
        cpu.append(time.process_time() - started_cpu)
        wall.append(time.perf_counter() - started)
    return {
        "pages": len(pages),
        "chars": sum(len(p) for p in pages),
        "best_cpu_s": min(cpu),
        "best_wall_s": min(wall),
        "peak_extra_mb": rss_mb(_self(), "VmHWM") - base_mb,
    }


def _self() -> int:
    import os

    return os.getpid()


def measure(library: str, path: Path, repeats: int, max_pages: int = 0) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", library, str(path), "--repeats", str(repeats),
         "--pypdf-max-pages", str(max_pages)],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    figures["ms_per_page"] = 1000 * figures["best_cpu_s"] / max(1, figures["pages"])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=2415, help="pages of the generated manual")
    parser.add_argument("--repeats", type=int, default=3, help="runs per sample (best counts)")
    parser.add_argument("--pypdf-max-pages", type=int, default=500,
                        help="pages of the manual pypdf reads (0: all)")  # fmt: skip
    parser.add_argument("--child", nargs=2, metavar=("LIBRARY", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.repeats, args.pypdf_max_pages)))
        return
    sys.path.insert(0, str(ROOT / "examples"))
    from make_samples import long_manual

    docs = sorted((ROOT / "examples" / "docs").glob("*.pdf"))
    with tempfile.TemporaryDirectory() as tmp:
        manual = Path(tmp) / f"manual_{args.pages}_pages.pdf"
        manual.write_bytes(long_manual(args.pages))
        rows: dict[str, dict[str, Any]] = {}
        for path in docs:
            rows[path.name] = {lib: measure(lib, path, args.repeats) for lib in LIBRARIES}
        rows[manual.name] = {
            "pypdf": measure("pypdf", manual, 1, args.pypdf_max_pages),
            "pypdfium2": measure("pypdfium2", manual, 1),
        }
    print(f"{'document':28} {'pages (pypdf/PDFium)':>20}  {'pypdf ms/page':>13} "
          f"{'PDFium ms/page':>14}  {'pypdf MB':>8} {'PDFium MB':>9}")  # fmt: skip
    for name, by_lib in rows.items():
        a, b = by_lib["pypdf"], by_lib["pypdfium2"]
        pages = f"{a['pages']}/{b['pages']}"
        print(f"{name:28} {pages:>20}  {a['ms_per_page']:>13.2f} {b['ms_per_page']:>14.2f}"
              f"  {a['peak_extra_mb']:>8.1f} {b['peak_extra_mb']:>9.1f}")  # fmt: skip
    manual_row = rows[manual.name]
    speedups = [r["pypdf"]["ms_per_page"] / r["pypdfium2"]["ms_per_page"] for r in rows.values()]
    summary = {
        "manual_pages": args.pages,
        "manual_pypdf_ms_per_page": manual_row["pypdf"]["ms_per_page"],
        "manual_pypdf_pages_read": manual_row["pypdf"]["pages"],
        "manual_pdfium_ms_per_page": manual_row["pypdfium2"]["ms_per_page"],
        "manual_pdfium_cpu_s": manual_row["pypdfium2"]["best_cpu_s"],
        "manual_pypdf_peak_extra_mb": manual_row["pypdf"]["peak_extra_mb"],
        "manual_pdfium_peak_extra_mb": manual_row["pypdfium2"]["peak_extra_mb"],
        "median_speedup": statistics.median(speedups),
    }
    print(
        f"\n{args.pages}-page manual: PDFium {summary['manual_pdfium_ms_per_page']:.2f} ms/page "
        f"({summary['manual_pdfium_cpu_s']:.1f} s CPU for all pages), pypdf "
        f"{summary['manual_pypdf_ms_per_page']:.2f} ms/page over its first "
        f"{summary['manual_pypdf_pages_read']}; median speed-up over the corpus "
        f"{summary['median_speedup']:.1f}x (CPU time per page)"
    )
    path = write_result("extraction", {"documents": rows, "summary": summary})
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
