"""Write the sample PDFs in examples/docs/: a contract, an invoice, an annual report, a scan.

They exist so `make demo` has realistic input and tests have documents with known
contents (names, dates, amounts to find). Output is byte-for-byte reproducible: a fixed
creation date, a seeded text generator and no clock or randomness from outside, so
re-running the script leaves git with nothing to commit.

    python examples/make_samples.py [OUT_DIR]
"""

from __future__ import annotations

import io
import random
import sys
from datetime import UTC, datetime
from pathlib import Path

from fpdf import FPDF
from PIL import Image, ImageDraw

CREATED = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
COMPANY = "Aldercrest Freight Ltd"
OUT = Path(__file__).resolve().parent / "docs"


def _new_pdf(title: str, author: str) -> FPDF:
    pdf = FPDF(format="A4")
    pdf.set_creation_date(CREATED)
    pdf.set_title(title)
    pdf.set_author(author)
    pdf.set_creator("examples/make_samples.py")
    pdf.set_producer("fpdf2")
    pdf.set_margins(20, 20, 20)
    pdf.set_auto_page_break(True, margin=20)
    return pdf


def _heading(pdf: FPDF, text: str, size: int = 13) -> None:
    pdf.set_font("Helvetica", "B", size)
    pdf.multi_cell(0, 7, text, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(1)
    pdf.set_font("Helvetica", "", 10)


def _para(pdf: FPDF, text: str) -> None:
    pdf.set_font("Helvetica", "", 10)
    pdf.multi_cell(0, 5, text, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)


def services_contract() -> bytes:
    pdf = _new_pdf("Master Services Agreement", "Harbourline Legal LLP")
    pdf.add_page()
    _heading(pdf, "MASTER SERVICES AGREEMENT", 16)
    _para(
        pdf,
        f"This Master Services Agreement (the \"Agreement\") is made on 15 January 2026 between "
        f"{COMPANY}, a company registered in England and Wales under number 08812345, whose "
        "registered office is at 14 Quayside Road, Bristol BS1 4QA (the \"Client\"), and "
        "Brightwater Analytics GmbH, registered in Hamburg under HRB 145522, whose office is at "
        "Speicherstadt 7, 20457 Hamburg (the \"Supplier\").",
    )
    clauses = [
        ("1. Services", "The Supplier shall provide route-optimisation analytics, a monthly "
         "fleet utilisation report and second-line support for the Client's dispatch software "
         "(the \"Services\"), as described in Schedule 1."),
        ("2. Term", "The Agreement starts on 1 February 2026 (the \"Start Date\") and continues "
         "for an initial term of twenty-four months, ending on 31 January 2028. It renews for "
         "successive twelve-month periods unless either party gives ninety days' written notice."),
        ("3. Fees", "The Client shall pay a fixed fee of EUR 18,500.00 per month, invoiced "
         "monthly in advance. Additional work requested in writing is charged at EUR 1,150.00 "
         "per consultant day. All fees are exclusive of VAT."),
        ("4. Payment", "Invoices are payable within thirty (30) days of receipt. Late payments "
         "bear interest at 4% per year above the European Central Bank main refinancing rate."),
        ("5. Service levels", "The Supplier shall answer priority-one support requests within "
         "two hours, twenty-four hours a day. If availability of the reporting portal falls "
         "below 99.5% in any month, the Client is entitled to a service credit of 5% of that "
         "month's fee, capped at EUR 9,250.00 per year."),
    ]
    for title, body in clauses:
        _heading(pdf, title, 11)
        _para(pdf, body)
    pdf.add_page()
    more = [
        ("6. Obligations of the Client", "The Client shall give the Supplier read access to "
         "its telematics feed, name a single point of contact for operational matters, and "
         "approve or reject each monthly report within ten working days."),
        ("7. Confidentiality", "Each party shall keep the other's confidential information "
         "secret during the term and for five years after it ends, and use it only to perform "
         "this Agreement."),
        ("8. Liability", "Each party's total liability in any contract year is limited to "
         "EUR 222,000.00, being twelve months of fees. Neither party limits liability for "
         "death or personal injury caused by negligence, or for fraud."),
        ("9. Data protection", "The Supplier processes personal data of the Client's drivers "
         "only on documented instructions, under the data processing addendum in Schedule 2."),
        ("10. Termination", "Either party may terminate on written notice if the other "
         "commits a material breach not remedied within thirty days of notice."),
        ("11. Governing law", "This Agreement is governed by the laws of England and Wales, and "
         "the courts of London have exclusive jurisdiction."),
    ]
    for title, body in more:
        _heading(pdf, title, 11)
        _para(pdf, body)
    pdf.ln(6)
    _para(pdf, f"Signed for {COMPANY}: Margaret Okafor, Chief Operating Officer, 15 January 2026.")
    _para(pdf, "Signed for Brightwater Analytics GmbH: Jonas Reinholt, Managing Director, "
          "15 January 2026.")
    return bytes(pdf.output())


def invoice() -> bytes:
    pdf = _new_pdf("Invoice BWA-2026-0042", "Brightwater Analytics GmbH")
    pdf.add_page()
    _heading(pdf, "Brightwater Analytics GmbH", 16)
    _para(pdf, "Speicherstadt 7, 20457 Hamburg, Germany - VAT ID DE298765432")
    _heading(pdf, "INVOICE BWA-2026-0042", 13)
    _para(pdf, f"Bill to: {COMPANY}, Accounts Payable, 14 Quayside Road, Bristol BS1 4QA, "
          "United Kingdom. Client reference: PO-77310.")
    _para(pdf, "Invoice date: 2026-03-01    Service period: March 2026    "
          "Due date: 2026-03-31")
    rows = [
        ("Description", "Qty", "Unit price (EUR)", "Amount (EUR)"),
        ("Monthly fixed fee - route analytics (MSA clause 3)", "1", "18,500.00", "18,500.00"),
        ("Additional consultant days - depot study", "3", "1,150.00", "3,450.00"),
        ("Telematics data connector licence", "12", "45.00", "540.00"),
        ("Service credit - February availability 99.1%", "1", "-925.00", "-925.00"),
    ]
    pdf.set_font("Helvetica", "", 9)
    align = ("LEFT", "RIGHT", "RIGHT", "RIGHT")
    with pdf.table(col_widths=(90, 15, 30, 30), text_align=align) as table:
        for row in rows:
            table.row(row)
    pdf.ln(4)
    totals = [
        ("Subtotal", "EUR 21,565.00"),
        ("VAT 19%", "EUR 4,097.35"),
        ("Total due", "EUR 25,662.35"),
    ]
    for label, amount in totals:
        pdf.set_font("Helvetica", "B" if label == "Total due" else "", 10)
        pdf.cell(130, 6, label)
        pdf.cell(35, 6, amount, align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    _para(pdf, "Please pay by bank transfer to Hanseatic Commerce Bank, IBAN DE44 2005 0550 "
          "1234 5678 90, BIC HASPDEHHXXX, quoting BWA-2026-0042. Payment terms: 30 days net. "
          "Questions: accounts@brightwater-analytics.example, Lena Vogt.")
    return bytes(pdf.output())


_REGIONS = ["Northern Europe", "the Iberian corridor", "the UK domestic network",
            "Central Europe", "the Baltic routes"]
_METRICS = ["on-time delivery", "fuel use per tonne-kilometre", "load factor",
            "average dwell time at depots", "claims per thousand consignments"]
_SUBJECTS = ["The board", "Management", "The operations team", "Our finance function",
             "The sustainability committee", "The group"]
_VERBS = ["improved", "reduced", "reviewed", "extended", "renegotiated", "simplified"]
_OBJECTS = ["the contract with our largest retail customer", "depot staffing rotas",
            "the hedging policy for diesel", "the cross-dock in Rotterdam",
            "driver training on low-emission vehicles", "the capital expenditure plan"]
_SECTIONS = ["Chair's statement", "Chief Executive's review", "Strategy and business model",
             "Operations review", "Financial review", "Sustainability", "Risk management",
             "Corporate governance", "Remuneration report", "Outlook for 2026"]


def _sentence(rng: random.Random, year: int) -> str:
    kind = rng.randrange(5)
    pct = rng.randint(2, 19) + rng.randint(0, 9) / 10
    if kind == 0:
        return (f"In {year}, {rng.choice(_METRICS)} in {rng.choice(_REGIONS)} "
                f"{rng.choice(['rose', 'fell'])} by {pct:.1f}% compared with the prior year.")
    if kind == 1:
        return (f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}, "
                f"which we expect to lift margins in {rng.choice(_REGIONS)}.")
    if kind == 2:
        amount = rng.randint(12, 480) / 10
        return (f"Revenue from {rng.choice(_REGIONS)} reached GBP {amount:.1f} million, "
                f"helped by {rng.choice(_OBJECTS)}.")
    if kind == 3:
        return (f"We measure {rng.choice(_METRICS)} monthly and report it to the board, "
                "because customers renew on service quality more than on price.")
    return (f"{rng.choice(_SUBJECTS)} will keep {rng.choice(_OBJECTS)} under review "
            f"during {year + 1}, with a decision expected by the third quarter.")


def annual_report(pages: int = 40) -> bytes:
    rng = random.Random(2025)
    pdf = _new_pdf(f"{COMPANY} Annual Report 2025", COMPANY)
    pdf.set_auto_page_break(False)
    pdf.add_page()
    _heading(pdf, f"{COMPANY}", 20)
    _heading(pdf, "Annual Report and Accounts 2025", 15)
    _para(pdf, f"{COMPANY} moves freight by road and short-sea ferry between 38 depots in "
          "nine countries. Chair: Eleanor Whitcombe. Chief Executive: Daniel Osei. "
          "Chief Financial Officer: Priya Raman. Auditor: Fenwick & Hale LLP.")
    _para(pdf, "Group revenue for the year ended 31 December 2025 was GBP 412.6 million "
          "(2024: GBP 389.0 million); operating profit was GBP 31.8 million and the board "
          "proposes a final dividend of 6.4 pence per share, payable on 12 June 2026.")
    bottom = pdf.h - 20
    for page in range(2, pages + 1):
        pdf.add_page()
        section = _SECTIONS[(page - 2) * len(_SECTIONS) // (pages - 1)]
        _heading(pdf, f"{section} (page {page})", 13)
        if section == "Financial review" and page % 2 == 0:
            pdf.set_font("Helvetica", "", 9)
            with pdf.table(col_widths=(70, 40, 40)) as table:
                table.row(("GBP million", "2025", "2024"))
                for label, base in (("Revenue", 412.6), ("Operating costs", 380.8),
                                    ("Operating profit", 31.8), ("Net debt", 96.2)):
                    table.row((label, f"{base:.1f}", f"{base * rng.uniform(0.88, 0.97):.1f}"))
            pdf.ln(3)
        while True:
            text = " ".join(_sentence(rng, 2025) for _ in range(rng.randint(3, 6)))
            height = pdf.multi_cell(0, 5, text, dry_run=True, output="HEIGHT")
            assert isinstance(height, float)  # output="HEIGHT" returns just the height
            if pdf.get_y() + height > bottom:
                break
            _para(pdf, text)
    return bytes(pdf.output())


def image_only() -> bytes:
    """A 'scanned' delivery note: pixels only, no text layer, so text extraction finds nothing."""
    img = Image.new("RGB", (1240, 1754), "white")
    draw = ImageDraw.Draw(img)
    rng = random.Random(7)
    draw.rectangle((80, 80, 1160, 260), outline="black", width=6)
    for row in range(14):
        y = 340 + row * 90
        draw.line((100, y, 1140, y), fill=(90, 90, 90), width=2)
        for col in range(rng.randint(3, 7)):  # scribbles standing in for handwriting
            x = 120 + col * 140
            draw.arc((x, y - 60, x + 110, y - 10), 200, 340, fill=(20, 20, 120), width=4)
    draw.ellipse((900, 1450, 1120, 1670), outline=(160, 0, 0), width=8)  # a stamp
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", optimize=False)
    pdf = _new_pdf("Scanned delivery note", COMPANY)
    pdf.add_page()
    pdf.image(io.BytesIO(buffer.getvalue()), x=0, y=0, w=pdf.w, h=pdf.h)
    return bytes(pdf.output())


SAMPLES = {
    "services_contract.pdf": services_contract,
    "invoice.pdf": invoice,
    "annual_report.pdf": annual_report,
    "scanned_delivery_note.pdf": image_only,
}


def main(out: Path = OUT) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in SAMPLES.items():
        path = out / name
        path.write_bytes(build())
        written.append(path)
    return written


if __name__ == "__main__":
    for path in main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
