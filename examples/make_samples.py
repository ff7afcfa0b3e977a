"""Write the sample PDFs in examples/docs/: what users send, with facts known in advance.

A contract, an invoice, an annual report, a scan without a text layer, a two-column
research paper, a table-heavy account statement and a letter in German. They exist so
`make demo` has realistic input and tests have documents with known contents: `FACTS`
below is the one place those facts are written down; the generators take them from there
and the tests (tests/test_offline_analysis.py) check the analysis against them. Output is
byte-for-byte reproducible: a fixed creation date, seeded text generators and no clock or
randomness from outside, so re-running the script leaves git with nothing to commit.
`long_manual(pages)` builds a long manual on demand (bench/extraction.py, tests); it is not
committed.

    python examples/make_samples.py [OUT_DIR]
"""

from __future__ import annotations

import io
import random
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from fpdf import FPDF
from PIL import Image, ImageDraw

CREATED = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
COMPANY = "Aldercrest Freight Ltd"
SUPPLIER = "Brightwater Analytics GmbH"
OUT = Path(__file__).resolve().parent / "docs"

# What each sample says, as the analysis should report it (dates ISO 8601, amounts as
# "CODE 1,234.56"). The generators below write these values into the documents.
FACTS: dict[str, dict[str, Any]] = {
    "invoice.pdf": {
        "document_type": "invoice", "language": "en",
        "total": "EUR 25,662.35", "invoice_date": "2026-03-01", "due_date": "2026-03-31",
        "organizations": [SUPPLIER, COMPANY], "people": ["Lena Vogt"],
    },
    "services_contract.pdf": {
        "document_type": "contract", "language": "en",
        "parties": [COMPANY, SUPPLIER], "signed": "2026-01-15",
        "people": ["Margaret Okafor", "Jonas Reinholt"],
    },
    "annual_report.pdf": {
        "document_type": "annual report", "language": "en",
        "company": COMPANY, "year": 2025, "year_end": "2025-12-31",
        "auditor": "Fenwick & Hale LLP", "revenue": "GBP 412.6 million",
    },
    "scanned_delivery_note.pdf": {"pages_without_text": [1]},
    "research_paper.pdf": {
        "document_type": "paper", "language": "en",
        "title": "Dwell Time Prediction for Cross-Dock Terminals",
        "organizations": ["Nordhafen Institute of Logistics GmbH"],
    },
    "account_statement.pdf": {
        "document_type": "statement", "language": "en",
        "bank": "Hanseatic Commerce Bank AG", "holder": COMPANY,
        "opening_balance": "EUR 120,000.00", "closing_balance": "EUR 97,418.65",
        "statement_date": "2026-02-28",
    },
    "letter_de.pdf": {
        "document_type": "letter", "language": "de",
        "sender": "Hansewerk Logistik GmbH", "date": "2026-02-12", "amount": "EUR 4,850.00",
        "people": ["Margaret Okafor"],  # by name: the title is not part of it
    },
}  # fmt: skip


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


def research_paper() -> bytes:
    """A two-column paper: title and authors across the page, the body in two columns."""
    facts = FACTS["research_paper.pdf"]
    rng = random.Random(11)
    pdf = _new_pdf(facts["title"], "Ines Falkner")
    pdf.add_page()
    _heading(pdf, facts["title"], 15)
    _para(pdf, f"Ines Falkner and Tobias Lindqvist, {facts['organizations'][0]}, Bremen")
    pdf.set_font("Helvetica", "", 9)
    sections = {
        "Abstract": "We predict how long inbound trailers wait at cross-dock terminals. A "
        "gradient-boosted model trained on 14 months of gate events cuts the mean absolute "
        "error of dwell-time forecasts by 31% against the scheduling rules now in use.",
        "1. Introduction": "Cross-dock terminals move freight from inbound to outbound "
        "trailers without storing it. Dwell time, the time a trailer waits at the terminal, "
        "drives both labour planning and the penalties carriers pay for late departures.",
        "2. Data": "The terminal operator shared gate, door and scanner events for 41,822 "
        "trailer visits between January 2024 and February 2025.",
        "3. Method": "We compare the operator's rule-based schedule with a gradient-boosted "
        "regression on arrival hour, carrier, load type and door occupancy.",
        "4. Results": "The model's mean absolute error is 23 minutes against 34 minutes for "
        "the rules. Errors are largest for trailers arriving during shift changes.",
        "5. Conclusion": "Forecasts of dwell time are accurate enough to plan door "
        "assignments an hour ahead, which the operator will trial in 2026.",
    }
    filler = ["Door occupancy explains most of the remaining variance.",
              "Carriers with fixed slots wait less than carriers without them.",
              "Weekend arrivals show shorter and less variable dwell times.",
              "The effect of load type shrinks once door occupancy is known.",
              "Late inbound trailers delay outbound departures on the same door."]  # fmt: skip
    with pdf.text_columns(ncols=2, gutter=8, text_align="JUSTIFY") as cols:
        for title, body in sections.items():
            cols.write(text=f"{title}\n")
            extra = " ".join(rng.choice(filler) for _ in range(rng.randint(4, 8)))
            cols.write(text=f"{body} {extra}\n\n")
        cols.write(text="References\n")
        cols.write(text="[1] Bartholdi, J. and Gue, K. Reducing labor costs in an LTL "
                   "crossdocking terminal. Operations Research 48(6), 2000.\n")
    return bytes(pdf.output())


def account_statement() -> bytes:
    """A bank statement that is mostly a table of transactions with a running balance."""
    facts = FACTS["account_statement.pdf"]
    rng = random.Random(28)
    pdf = _new_pdf("Statement of account February 2026", facts["bank"])
    pdf.add_page()
    _heading(pdf, facts["bank"], 15)
    _heading(pdf, "STATEMENT OF ACCOUNT", 13)
    _para(pdf, f"Account holder: {facts['holder']}. Account DE44 2005 0550 1234 5678 90. "
          f"Statement date: {facts['statement_date']}. Period: 2026-02-01 to 2026-02-28.")
    opening = Decimal(facts["opening_balance"].split()[1].replace(",", ""))
    closing = Decimal(facts["closing_balance"].split()[1].replace(",", ""))
    payees = ["Brightwater Analytics GmbH", "Fuel card settlement", "Depot rent Rotterdam",
              "Customer receipt", "Payroll", "Ferry tickets", "Toll charges"]  # fmt: skip
    moves = [Decimal(rng.randint(-900000, 500000)) / 100 for _ in range(29)]
    moves.append(closing - opening - sum(moves, Decimal(0)))  # the last one lands on closing
    pdf.set_font("Helvetica", "", 8)
    balance = opening
    with pdf.table(col_widths=(22, 78, 30, 30), text_align=("LEFT", "LEFT", "RIGHT", "RIGHT"),
                   line_height=4.5) as table:  # fmt: skip
        table.row(("Date", "Description", "Amount (EUR)", "Balance (EUR)"))
        table.row(("2026-02-01", "Opening balance", "", f"{opening:,.2f}"))
        for day, move in enumerate(moves, start=1):
            balance += move
            date = f"2026-02-{min(28, 1 + day * 27 // len(moves)):02d}"
            table.row((date, rng.choice(payees), f"{move:,.2f}", f"{balance:,.2f}"))
    pdf.ln(3)
    _para(pdf, f"Opening balance {facts['opening_balance']}. Closing balance "
          f"{facts['closing_balance']}.")
    return bytes(pdf.output())


def letter_de() -> bytes:
    """A business letter in German (Latin-1 text, so the core fonts can draw it)."""
    facts = FACTS["letter_de.pdf"]
    pdf = _new_pdf("Schreiben an Aldercrest Freight Ltd", facts["sender"])
    pdf.add_page()
    _heading(pdf, facts["sender"], 14)
    _para(pdf, "Am Sandtorkai 12, 20457 Hamburg")
    pdf.ln(4)
    _para(pdf, f"{COMPANY}\nz. Hd. Frau Margaret Okafor\n14 Quayside Road\nBristol BS1 4QA")
    _para(pdf, "Hamburg, 12. Februar 2026")
    _heading(pdf, "Lagerung von Ersatzteilen im Februar 2026", 11)
    body = [
        "Sehr geehrte Frau Okafor,",
        "vielen Dank für Ihre Anfrage vom 3. Februar 2026. Gerne bestätigen wir, dass wir "
        "Ihre Ersatzteile ab dem 1. März 2026 in unserem Lager am Sandtorkai einlagern.",
        "Für die Lagerung berechnen wir monatlich 4.850,00 EUR zuzüglich Umsatzsteuer. Die "
        "Rechnung erhalten Sie jeweils zum Monatsanfang; das Zahlungsziel beträgt dreißig "
        "Tage.",
        "Die Ware wird bei Eingang geprüft und in unserem Lagerverwaltungssystem erfasst. "
        "Über Schäden an der Verpackung informieren wir Sie noch am selben Tag.",
        "Bitte teilen Sie uns mit, wer bei Ihnen für die Abholung zuständig ist.",
        "Mit freundlichen Grüßen",
        "Klaus Petersen, Geschäftsführer",
    ]
    for paragraph in body:
        _para(pdf, paragraph)
    return bytes(pdf.output())


def long_manual(pages: int, seed: int = 2415, lines: int = 54) -> bytes:
    """A long maintenance manual (`pages` pages of `lines` lines): distinct text on every
    page, written line by line because fpdf2's multi_cell is too slow for thousands of
    pages. The maker is named on every page, a distributor only on the last."""
    rng = random.Random(seed)
    parts = ["pump", "valve", "pressure sensor", "drive belt", "seal", "filter", "bearing"]
    verbs = ["Check", "Replace", "Tighten", "Clean", "Inspect", "Lubricate"]
    pdf = FPDF(format="A4")
    pdf.set_creation_date(CREATED)
    pdf.set_title("Norrland Pumps AB maintenance manual")
    pdf.set_font("Helvetica", "", 9)
    for page in range(1, pages + 1):
        pdf.add_page()
        pdf.text(15, 15, f"Norrland Pumps AB - maintenance manual - page {page}")
        for line in range(1, lines + 1):
            part = rng.choice(parts)
            pdf.text(15, 15 + line * 4.9, f"{rng.choice(verbs)} the {part} of unit "
                     f"{rng.randint(1, 400)} every {rng.randint(2, 48)} weeks and record the "
                     f"reading in the log.")
        if page == pages:
            pdf.text(15, 285, "Distributed by Kestrel Hydraulics Oy, revised 17 May 2031.")
    return bytes(pdf.output())


SAMPLES = {
    "services_contract.pdf": services_contract,
    "invoice.pdf": invoice,
    "annual_report.pdf": annual_report,
    "scanned_delivery_note.pdf": image_only,
    "research_paper.pdf": research_paper,
    "account_statement.pdf": account_statement,
    "letter_de.pdf": letter_de,
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
