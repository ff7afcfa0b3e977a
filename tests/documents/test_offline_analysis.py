"""The analysis a user gets: the sample PDFs through the real tasks, checked against the facts
written into them (examples/make_samples.py's FACTS), results that say what produced them,
no prompt words in any result, long documents merged as data within the size bound."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis

from pipeline.llm.gemini import GeminiProvider
from tasks.merge import (
    MAX_POINT_CHARS,
    MAX_SUMMARY_CHARS,
    bound,
    merge_entities,
    merge_key_points,
)
from tasks.prompts import load_prompt
from tasks.result import reusable
from tasks.schema import AnalysisResult
from tasks.submission import Upload
from tests.support.emulator import start_emulator
from tests.support.offline_runs import Recording, analyse, run_offline
from tests.support.pdfs import make_pdf

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "examples" / "docs"


def _samples_module() -> ModuleType:
    path = ROOT / "examples" / "make_samples.py"
    spec = importlib.util.spec_from_file_location("make_samples", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SAMPLES = _samples_module()
FACTS: dict[str, dict[str, Any]] = SAMPLES.FACTS


@pytest.fixture(scope="module")
def results(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every sample analysed once, offline, through the real worker and tasks."""
    uploads = [Upload(name, (DOCS / name).read_bytes()) for name in FACTS]
    found: dict[str, Any] = run_offline(redis_url, tmp_path_factory.mktemp("samples"), uploads)
    return found


def test_every_sample_has_its_facts_written_down() -> None:
    assert set(FACTS) == set(SAMPLES.SAMPLES) == {p.name for p in DOCS.glob("*.pdf")}


def test_invoice_total_and_dates(results: dict[str, Any]) -> None:
    facts, result = FACTS["invoice.pdf"], results["invoice.pdf"]
    assert facts["total"] in result["entities"]["amounts"]
    assert facts["invoice_date"] in result["entities"]["dates"]
    assert facts["due_date"] in result["entities"]["dates"]
    assert result["document_type"] == facts["document_type"]
    assert set(facts["organizations"]) <= set(result["entities"]["organizations"])
    assert result["entities"]["people"] == facts["people"]  # not "Accounts Payable"


def test_contract_parties(results: dict[str, Any]) -> None:
    facts, result = FACTS["services_contract.pdf"], results["services_contract.pdf"]
    assert result["entities"]["organizations"][:2] == facts["parties"]
    assert facts["signed"] in result["entities"]["dates"]
    assert set(facts["people"]) <= set(result["entities"]["people"])
    assert result["document_type"] == facts["document_type"]


def test_report_company_and_year(results: dict[str, Any]) -> None:
    facts, result = FACTS["annual_report.pdf"], results["annual_report.pdf"]
    assert result["entities"]["organizations"][0] == facts["company"]
    assert facts["auditor"] in result["entities"]["organizations"]
    assert facts["year_end"] in result["entities"]["dates"]
    assert facts["year_end"].startswith(str(facts["year"]))
    assert facts["revenue"] in result["entities"]["amounts"]
    assert result["document_type"] == facts["document_type"]
    assert "Chief Executive" not in result["entities"]["people"]


def test_scan_is_reported_as_having_no_text_and_nothing_is_invented(
    results: dict[str, Any],
) -> None:
    result = results["scanned_delivery_note.pdf"]
    assert result["pages_without_text"] == [[1, 1]]
    assert result["summary"] == (
        "No text layer on page 1; OCR is not available offline, so it was not read."
    )
    assert result["notes"] == [result["summary"]]
    assert result["document_type"] == "unknown"
    assert result["language"] == "unknown"
    assert result["key_points"] == []
    assert all(values == [] for values in result["entities"].values())


def test_letter_in_german(results: dict[str, Any]) -> None:
    facts, result = FACTS["letter_de.pdf"], results["letter_de.pdf"]
    assert result["language"] == "de"
    assert result["document_type"] == "letter"
    assert result["entities"]["dates"][0] == facts["date"]  # "12. Februar 2026"
    assert facts["amount"] in result["entities"]["amounts"]  # "4.850,00 EUR"
    assert facts["sender"] in result["entities"]["organizations"]
    assert set(facts["people"]) <= set(result["entities"]["people"])
    assert "Frau Okafor" not in result["entities"]["people"]  # the same person, named once


def test_statement_and_paper(results: dict[str, Any]) -> None:
    facts, result = FACTS["account_statement.pdf"], results["account_statement.pdf"]
    assert result["document_type"] == "statement"
    balances = {facts["opening_balance"], facts["closing_balance"]}
    assert balances <= set(result["entities"]["amounts"])
    assert facts["bank"] in result["entities"]["organizations"]
    assert facts["statement_date"] in result["entities"]["dates"]
    paper, result = FACTS["research_paper.pdf"], results["research_paper.pdf"]
    assert result["document_type"] == "paper"
    assert result["entities"]["organizations"] == paper["organizations"]
    # Two columns read column by column: the abstract's first sentence survives whole.
    assert "We predict how long inbound trailers wait at cross-dock terminals." in result["summary"]


def test_every_sample_gets_a_summary_from_its_own_text(results: dict[str, Any]) -> None:
    from tasks.pdf import extract_text

    for name, result in results.items():
        if "pages_without_text" in FACTS[name]:
            continue
        text = " ".join(" ".join(extract_text((DOCS / name).read_bytes())).split())
        assert result["summary"], name
        assert all(sentence.rstrip(".") in text for sentence in _sentences(result["summary"])), name
        assert result["language"] == FACTS[name]["language"], name


def _sentences(summary: str) -> list[str]:
    from pipeline.llm.offline import page_units

    return page_units(summary)


def _prompt_phrases() -> Iterator[str]:
    """Every line of the shipped prompts with five words or more and no placeholder."""
    for name in ("analyze", "reduce", "repair"):
        prompt = load_prompt(name)
        for line in (prompt.system + "\n" + prompt.user_template).splitlines():
            line = line.strip().lstrip("- ").strip()
            if "$" not in line and len(line.split()) >= 5:
                yield line.lower()
    yield 'analyse the attached pdf "invoice.pdf"'


def test_no_result_contains_the_prompts_words(results: dict[str, Any]) -> None:
    phrases = list(_prompt_phrases())
    assert len(phrases) > 15
    assert any(p.startswith("you are a careful document analyst") for p in phrases)
    for name, result in results.items():
        text = json.dumps(result, ensure_ascii=False).lower()
        leaked = [p for p in phrases if p in text]
        assert not leaked, f"{name} quotes the prompt: {leaked}"


def test_results_say_what_produced_them(results: dict[str, Any]) -> None:
    version = load_prompt("analyze").version
    for name, result in results.items():
        record = AnalysisResult.model_validate(result)
        assert record.produced_by.model_dump() == {
            "provider": "offline", "model": "offline", "model_version": "offline",
            "prompt_version": version,
        }  # fmt: skip
        # money as every output writes it, under a name that says which cost it is
        assert result["used_answers_cost_usd"] == "0.000000000"
        assert [p["used_answers_cost_usd"] for p in result["parts"]] == ["0.000000000"]
        pages = record.page_count
        assert [(p.part, p.first_page, p.last_page) for p in record.parts] == [(1, 1, pages)]
        assert record.started_at <= record.finished_at, name


def test_a_2415_page_document_merges_under_the_size_bound(
    redis_url: str, tmp_path: Path
) -> None:
    pages = 2415
    manual = SAMPLES.long_manual(pages, lines=8)  # light pages: the test is about merging
    # 600k tokens a call -> 1,000 pages (Gemini's cap per document part) -> three parts.
    found = run_offline(redis_url, tmp_path, [Upload("manual.pdf", manual)],
                        context_budget_tokens=600_000, timeout_s=240)  # fmt: skip
    result = found["manual.pdf"]
    record = AnalysisResult.model_validate(result)
    assert len(json.dumps(result, ensure_ascii=False).encode()) <= 16_384  # the default bound
    assert record.page_count == pages
    assert [(p.first_page, p.last_page) for p in record.parts] == [
        (1, 805), (806, 1610), (1611, 2415)
    ]
    assert [p.part for p in record.parts] == [1, 2, 3]
    orgs = record.entities.organizations
    assert orgs.count("Norrland Pumps AB") == 1  # named on every page of every part: once
    assert "Kestrel Hydraulics Oy" in orgs  # only on the last page: the last part counts too
    assert "2031-05-17" in record.entities.dates
    assert record.document_type == "manual" and record.language == "en"
    assert 0 < len(record.summary) <= MAX_SUMMARY_CHARS
    assert 0 < len(record.key_points) <= 10
    assert record.pages_without_text == []


def test_bound_keeps_the_best_ranked_items_and_says_it_cut() -> None:
    parts: list[dict[str, Any]] = [
        {"entities": {"people": [], "dates": [],
                      "organizations": [f"Org {i} of part {n} GmbH" for i in range(40)],
                      "amounts": [f"EUR {n},{i:03d}.00" for i in range(40)]},
         "key_points": [f"Point {i} of part {n}: " + "detail " * 80 for i in range(10)]}
        for n in range(30)
    ]  # fmt: skip
    parts[7]["entities"]["organizations"].append("Everywhere Ltd")
    for part in parts:
        part["entities"]["organizations"].insert(0, "everywhere ltd.")
    entities = merge_entities(parts)
    assert entities["organizations"][0] == "everywhere ltd."  # named by all 30: ranked first
    assert sum(o.lower().startswith("everywhere") for o in entities["organizations"]) == 1
    points = merge_key_points(parts)
    assert len(points) == 10  # ranked round-robin over the parts' own ranks, then capped
    assert [p.split(":")[0] for p in points[:3]] == [
        "Point 0 of part 0", "Point 0 of part 1", "Point 0 of part 2"
    ]
    assert all(len(p) <= MAX_POINT_CHARS and p.endswith("…") for p in points)
    record = {"summary": "word " * 2000, "key_points": merge_key_points(parts),
              "entities": entities, "notes": [], "parts": [], "pages_without_text": []}
    small = bound(record, 4096)
    assert len(json.dumps(small, ensure_ascii=False).encode()) <= 4096
    assert small["entities"]["organizations"][0] == "everywhere ltd."
    assert "PIPELINE_MAX_RESULT_BYTES" in small["notes"][-1]
    assert len(small["summary"]) <= MAX_SUMMARY_CHARS
    with pytest.raises(ValueError, match="raise PIPELINE_MAX_RESULT_BYTES"):
        bound({**record, "notes": ["x" * 5000]}, 4096)


def test_a_stored_result_answers_only_for_its_own_provider(results: dict[str, Any]) -> None:
    stored = results["invoice.pdf"]
    assert reusable(stored, "offline")
    assert not reusable(stored, "gemini")  # never served as if Gemini had written it
    assert not reusable({k: v for k, v in stored.items() if k != "produced_by"}, "offline")
    assert not reusable(stored, None)


async def test_gemini_merge_reads_the_parts_fields_not_a_json_dump(
    redis_url: str, key_prefix: str, sredis: redis.Redis, tmp_path: Path
) -> None:
    text = ("Page {n}. Brightwater Analytics GmbH invoices Aldercrest Freight Ltd for "
            "EUR 1,200.00 on 2026-03-0{n}. Lena Vogt approved it.")  # fmt: skip
    with start_emulator() as emu:
        provider = Recording(GeminiProvider(api_key=emu.api_key, base_url=emu.base_url))
        # 560 tokens a page: 2 pages per map call -> 3 parts for 6 pages.
        upload = Upload("doc.pdf", make_pdf(6, text))
        found = await analyse(redis_url, key_prefix, tmp_path, [upload], provider,
                              context_budget_tokens=4096 + 1200)  # fmt: skip
    result = found["doc.pdf"]
    record = AnalysisResult.model_validate(result)
    merge = [r for r in provider.requests if r.prompt_version.startswith("reduce-")]
    assert len(merge) == 1 and len(provider.requests) == 4  # three parts, one merge
    sent = merge[0].parts[0].text or ""
    assert "Part 1 (pages 1-2)" in sent and "Part 3 (pages 5-6)" in sent
    assert "Summary: " in sent and "Key points:\n- " in sent
    assert '"summary"' not in sent and '"entities"' not in sent  # fields, not pasted JSON
    assert set(merge[0].response_schema["properties"]) == {"summary", "key_points", "document_type"}  # type: ignore[index]
    assert record.produced_by.provider == "gemini"
    assert [(p.first_page, p.last_page) for p in record.parts] == [(1, 2), (3, 4), (5, 6)]
    assert record.entities.organizations.count("Brightwater Analytics GmbH") == 1
    used = record.used_answers_cost_usd
    assert used is not None and used > 0
    assert sum(p.used_answers_cost_usd or 0 for p in record.parts) < used  # the merge call too
    assert re.fullmatch(r"\d+\.\d{9}", result["used_answers_cost_usd"])  # never a float


def test_pages_without_text_in_a_mixed_document_are_named(redis_url: str, tmp_path: Path) -> None:
    """A contract with a scanned page between its two pages: the scan is reported by page
    number, and the analysis comes from the pages that have text."""
    import io

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    contract = PdfReader(DOCS / "services_contract.pdf")
    writer.add_page(contract.pages[0])
    writer.add_page(PdfReader(DOCS / "scanned_delivery_note.pdf").pages[0])
    writer.add_page(contract.pages[1])
    buffer = io.BytesIO()
    writer.write(buffer)
    found = run_offline(redis_url, tmp_path, [Upload("mixed.pdf", buffer.getvalue())])
    result = found["mixed.pdf"]
    assert result["pages_without_text"] == [[2, 2]]
    assert result["notes"] == [
        "No text layer on page 2; OCR is not available offline, so it was not read."
    ]
    assert result["document_type"] == "contract" and result["page_count"] == 3
    assert "No text layer" not in result["summary"]
    assert FACTS["services_contract.pdf"]["parties"] == result["entities"]["organizations"][:2]
