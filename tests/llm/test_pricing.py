"""Pricing arithmetic against the shipped table: Decimal end to end, dated rows, tiers."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from pipeline.errors import UnknownModel
from pipeline.llm.pricing import PriceTable, canonical_model
from pipeline.llm.provider import Usage

M = 1_000_000


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load()


def test_table_has_version_and_sources(table: PriceTable) -> None:
    assert table.version
    price = table.price("gemini-2.5-pro", date(2026, 11, 1))
    assert "deprecations" in price.source
    assert "gemini-3.8-flash" in table.known_models()


def test_cost_is_decimal_and_counts_thinking_as_output(table: PriceTable) -> None:
    usage = Usage(input_tokens=M, output_tokens=M // 2, thinking_tokens=M // 2)
    cost = table.cost("gemini-3.5-flash-lite", usage, datetime(2026, 11, 21, tzinfo=UTC))
    assert isinstance(cost, Decimal)
    assert cost == Decimal("0.30") + Decimal("2.50")


def test_cost_quantized_to_nano_dollars(table: PriceTable) -> None:
    cost = table.cost(
        "gemini-2.5-flash-lite", Usage(input_tokens=1, output_tokens=1), date(2026, 1, 1)
    )
    assert cost == Decimal("0.000000500")  # 0.10/1M + 0.40/1M
    assert cost.as_tuple().exponent == -9


def test_cached_tokens_priced_at_cached_rate(table: PriceTable) -> None:
    usage = Usage(input_tokens=M, cached_tokens=400_000, output_tokens=0)
    cost = table.cost("gemini-2.5-flash", usage, date(2026, 11, 1))
    assert cost == Decimal("0.6") * Decimal("0.30") + Decimal("0.4") * Decimal("0.03")


def test_long_context_tier_prices_whole_request(table: PriceTable) -> None:
    at = date(2026, 11, 1)
    short = table.cost("gemini-2.5-pro", Usage(input_tokens=200_000, output_tokens=10_000), at)
    long = table.cost("gemini-2.5-pro", Usage(input_tokens=200_001, output_tokens=10_000), at)
    assert short == (Decimal(200_000) * Decimal("1.25") + Decimal(10_000) * Decimal("10")) / M
    assert long == (Decimal(200_001) * Decimal("2.50") + Decimal(10_000) * Decimal("15")) / M
    cached = table.cost(
        "gemini-3.1-pro-preview", Usage(input_tokens=300_000, cached_tokens=300_000), at
    )
    assert cached == Decimal(300_000) * Decimal("0.40") / M


def test_batch_is_half_price(table: PriceTable) -> None:
    usage = Usage(input_tokens=M, output_tokens=M)
    at = date(2026, 11, 1)
    assert table.cost("gemini-3.5-flash", usage, at, batch=True) == Decimal("5.25")
    assert table.cost("gemini-3.5-flash", usage, at) == Decimal("10.50")


def test_3_8_flash_price_doubles_on_2027_01_01(table: PriceTable) -> None:
    usage = Usage(input_tokens=M, output_tokens=M)
    before = table.cost("gemini-3.8-flash", usage, datetime(2026, 12, 31, 23, 59, tzinfo=UTC))
    after = table.cost("gemini-3.8-flash", usage, datetime(2027, 1, 1, 0, 0, tzinfo=UTC))
    assert before == Decimal("4.50")
    assert after == Decimal("9.00")
    assert table.price("gemini-3.8-flash", date(2027, 1, 1)).effective_from == date(2027, 1, 1)


def test_worst_case_cost_uses_all_output_tokens(table: PriceTable) -> None:
    worst = table.worst_case_cost("gemini-3.8-flash", 10_000, 2_048, date(2026, 11, 21))
    assert worst == (Decimal(10_000) * Decimal("0.75") + Decimal(2_048) * Decimal("3.75")) / M
    assert worst >= table.cost("gemini-3.8-flash", Usage(10_000, 1_000, 1_000), date(2026, 11, 21))


@pytest.mark.parametrize(
    ("name", "entry"),
    [
        ("gemini-3.5-flash-lite", "gemini-3.5-flash-lite"),
        ("models/gemini-3.5-flash", "gemini-3.5-flash"),
        (" gemini-3.5-flash ", "gemini-3.5-flash"),
        ("gemini-flash-latest", "gemini-3.8-flash"),  # an alias of the table
        ("models/gemini-flash-lite-latest", "gemini-3.5-flash-lite"),
    ],
)
def test_canonical_model_ids(table: PriceTable, name: str, entry: str) -> None:
    assert table.canonical(name) == entry
    assert canonical_model(name) == entry  # the shipped table, as every caller uses it
    assert table.price(name, date(2026, 11, 21)).model == entry


@pytest.mark.parametrize(
    "name",
    [
        "gemini-3.5-flash-lite-001",  # a version suffix: another id, not this price
        "gemini-3.5-flash-lite:streamGenerateContent",  # a REST method, not a model
        "gemini-2.5-flash-preview-09-2025",
        "Gemini-3.5-Flash-Lite",
        "models/",
        "",
    ],
)
def test_near_misses_are_refused_with_the_known_models(table: PriceTable, name: str) -> None:
    with pytest.raises(UnknownModel) as info:
        table.canonical(name)
    message = str(info.value)
    assert repr(name) in message and "gemini-3.5-flash-lite" in message
    assert "gemini-flash-latest" in message  # aliases are listed too
    with pytest.raises(UnknownModel):
        table.cost(name, Usage(1, 1), date(2026, 11, 21))
    if name.startswith("gemini-3.5-flash-lite"):
        assert "Did you mean 'gemini-3.5-flash-lite'?" in message


def test_unknown_model_lists_known_ones(table: PriceTable) -> None:
    with pytest.raises(UnknownModel) as info:
        table.cost("gpt-4o", Usage(1, 1), date(2026, 11, 1))
    message = str(info.value)
    assert "gpt-4o" in message
    assert "gemini-3.8-flash" in message and "gemini-2.5-pro" in message
    with pytest.raises(UnknownModel):
        table.check_model("gemini-2.5-flashy", date(2026, 11, 1))


def test_shutdown_warnings_name_successor(table: PriceTable) -> None:
    before = table.check_model("gemini-2.5-pro", date(2026, 11, 21))
    assert len(before) == 1 and "2026-12-01" in before[0] and "gemini-3.8-flash" in before[0]
    after = table.check_model("gemini-2.5-flash", date(2026, 12, 2))
    assert "was shut down" in after[0] and "gemini-3.5-flash-lite" in after[0]
    assert table.check_model("gemini-3.8-flash", date(2026, 12, 2)) == []
    assert table.retired_aliases(date(2026, 12, 1))["gemini-2.5-pro"] == "gemini-3.8-flash"
    assert "gemini-2.5-pro" not in table.retired_aliases(date(2026, 11, 30))


def test_price_before_release_is_an_error(table: PriceTable) -> None:
    with pytest.raises(UnknownModel, match="not available"):
        table.price("gemini-3.8-flash", date(2026, 1, 1))
