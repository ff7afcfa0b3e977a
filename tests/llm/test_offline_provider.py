"""The offline analyzer: extraction from a document's own text, schema-shaped JSON, $0 usage."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel

from pipeline.errors import BadDocument
from pipeline.llm.offline import OfflineProvider, analyze_text, fill_schema, page_units
from pipeline.llm.provider import LLMRequest, Part
from tests.support.pdfs import make_pdf

INVOICE = (
    "INVOICE No. 2026-117. Acme Widgets GmbH billed Globex Corporation Inc. on 2026-03-14 "
    "for consulting work on the invoice pipeline. The amount due is $12,500.00 and payment "
    "is due by March 31, 2026. Please contact Dr. Jane Smith at jane.smith@acme.example with "
    "questions about the invoice. Mr. John Doe approved the invoice for payment."
)
GERMAN = (
    "Die Firma hat den Vertrag nicht unterschrieben. Das ist ein Problem für die Abteilung, "
    "und es wird auch von dem Vorstand geprüft."
)


class Entities(BaseModel):
    people: list[str]
    organizations: list[str]
    dates: list[str]
    amounts: list[str]


class LineItem(BaseModel):
    description: str
    quantity: int


class DocAnalysis(BaseModel):
    summary: str
    key_points: list[str]
    document_type: Literal["invoice", "contract", "report", "other"]
    entities: Entities
    language: str
    page_count: int
    word_count: int
    keywords: list[str]
    risk_level: Literal["low", "medium", "high"]
    line_items: list[LineItem]
    reviewer_note: str | None


def test_text_analysis_finds_entities_and_type() -> None:
    a = analyze_text(INVOICE)
    assert a.document_type == "invoice"
    assert a.language == "en"
    assert "Acme Widgets GmbH" in a.entities["organizations"]
    assert "Jane Smith" in a.entities["people"]  # by name: the title is not kept
    assert "John Doe" in a.entities["people"]
    assert a.entities["dates"] == ["2026-03-14", "2026-03-31"]  # ISO, "March 31, 2026" too
    assert "USD 12,500.00" in a.entities["amounts"]
    assert a.entities["emails"] == ["jane.smith@acme.example"]
    assert "invoice" in [k.lower() for k in a.keywords]
    assert a.summary and all(s in INVOICE for s in page_units(a.summary))
    assert all(p in INVOICE for p in a.key_points)
    assert 1 <= len(a.key_points) <= 10
    assert 40 < a.word_count <= len(INVOICE.split())


def test_language_guess_german() -> None:
    assert analyze_text(GERMAN).language == "de"


def test_fill_schema_validates_pydantic_schema() -> None:
    schema = DocAnalysis.model_json_schema()  # uses $defs/$ref, enums, anyOf-null
    data = fill_schema(schema, analyze_text(INVOICE, page_count=2))
    parsed = DocAnalysis.model_validate(data)
    assert parsed.document_type == "invoice"
    assert parsed.page_count == 2
    assert "Acme Widgets GmbH" in parsed.entities.organizations
    assert parsed.risk_level in ("low", "medium", "high")


async def test_provider_text_is_deterministic_and_free() -> None:
    provider = OfflineProvider()
    document = Part(data=INVOICE.encode(), mime_type="text/plain")
    request = LLMRequest(model="gemini-3.8-flash", parts=(document,), system="Summarise.")
    first = await provider.generate(request)
    second = await provider.generate(request)
    assert first.text == second.text and first.text
    assert first.model_version == "offline"
    assert first.usage.input_tokens == -(-(len(INVOICE) + len("Summarise.")) // 4)
    assert first.usage.output_tokens == -(-len(first.text) // 4)
    assert await provider.count_tokens(request) == first.usage.input_tokens


async def test_provider_pdf_with_schema() -> None:
    pdf = make_pdf(3, "Page {n}. " + INVOICE)
    request = LLMRequest(
        model="gemini-3.8-flash",
        parts=(Part.pdf(pdf), Part(text="Analyse this document.")),
        response_schema=DocAnalysis.model_json_schema(),
    )
    response = await OfflineProvider().generate(request)
    parsed = DocAnalysis.model_validate_json(response.text)
    assert parsed == DocAnalysis.model_validate(response.data)
    assert parsed.page_count == 3
    assert parsed.document_type == "invoice"
    assert "Jane Smith" in parsed.entities.people


async def test_provider_rejects_corrupt_pdf() -> None:
    request = LLMRequest(model="m", parts=(Part.pdf(b"%PDF-1.4 not really"),))
    with pytest.raises(BadDocument, match="corrupt"):
        await OfflineProvider().generate(request)


async def test_provider_reads_the_document_never_the_instructions() -> None:
    """With a document part, the prompt's words are nobody's content; without one, the text
    parts are all there is to read; the system instruction is never read."""
    prompt = Part(text="Analyse the attached file. Return a summary of Globex Corporation Inc.")
    document = Part(data=GERMAN.encode(), mime_type="text/plain")
    request = LLMRequest(model="m", parts=(document, prompt), system="Acme Widgets GmbH rules.")
    answer = (await OfflineProvider().generate(request)).raw["analysis"]
    assert answer["language"] == "de"
    assert "Globex" not in str(answer) and "Analyse" not in str(answer)
    assert "Acme" not in str(answer)
    question = LLMRequest(model="m", parts=(Part(text=INVOICE),), system="Acme Widgets GmbH rules.")
    answer = (await OfflineProvider().generate(question)).raw["analysis"]
    assert "Globex Corporation Inc." in answer["entities"]["organizations"]
    assert "rules" not in answer["summary"]


def test_a_person_is_named_without_a_courtesy_title_unless_it_is_all_there_is() -> None:
    from pipeline.llm.offline.entities import find_people

    text = (
        "Sehr geehrte Frau Margaret Okafor, wie besprochen.\nFrau Okafor bestätigt.\n"
        "Signed: Dr. Smith\nPresent: Prof. Dr. Ada Lovelace and Herr Klaus Petersen"
    )
    people = find_people(text, frozenset(), [])
    assert people == ["Margaret Okafor", "Dr. Smith", "Ada Lovelace", "Klaus Petersen"]
