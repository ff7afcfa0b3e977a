"""A cost report (ledger/report.py) made readable: documents named, and CSV, the same for
`pipeline costs` and `GET /costs`.

Grouped by document, a report's keys are content hashes; people look for file names, so each
row gets the `name` the document was submitted under (its latest), the hash staying the key.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.ledger.models import Document
from pipeline.ledger.report import FIELDS


def name_documents(session: Session, report: dict[str, Any]) -> dict[str, Any]:
    """With `by == "document"`: every row gains "name" (None for calls without a document).
    Other groupings are returned unchanged."""
    if report.get("by") != "document":
        return report
    ids = [row["key"] for row in report["rows"]]
    names = dict(session.execute(select(Document.id, Document.file_name).where(
        Document.id.in_(ids))).tuples().all())  # fmt: skip
    for row in report["rows"]:
        row["name"] = names.get(row["key"])
    return report


def report_csv(report: dict[str, Any]) -> str:
    """One line per group and a TOTAL line: key (and name, by document), then FIELDS."""
    named = report.get("by") == "document"
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["key", *(["name"] if named else []), *FIELDS])
    for row in [*report["rows"], {"key": "TOTAL", **report["total"]}]:
        name = [row.get("name") or ""] if named else []
        writer.writerow([row["key"], *name, *("" if row[f] is None else row[f] for f in FIELDS)])
    return out.getvalue()
