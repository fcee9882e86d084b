"""Money is exact: parsing, conversion, pricing, and the page filters that display it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.money import InvalidAmount, cost_micros, format_usd, micros_to_usd, usd_to_micros
from billing.templatetags.billing_tags import compact, exact_places, percent, usd, usd_exact


@pytest.mark.parametrize(
    ("amount", "micros"),
    [
        ("5", 5_000_000),
        ("5.00", 5_000_000),
        (" 12.5 ", 12_500_000),
        ("0.000001", 1),
        ("-2.25", -2_250_000),
        ("1e2", 100_000_000),
        (Decimal("0.1"), 100_000),
        (3, 3_000_000),
    ],
)
def test_usd_to_micros_converts_exactly(amount: object, micros: int) -> None:
    assert usd_to_micros(amount) == micros


@pytest.mark.parametrize("amount", ["0.0000001", "1.2345678", "abc", "", "NaN", "Infinity", "1,5"])
def test_usd_to_micros_refuses_what_it_cannot_convert_exactly(amount: str) -> None:
    with pytest.raises(InvalidAmount):
        usd_to_micros(amount)


def test_micros_to_usd_is_a_six_decimal_decimal() -> None:
    assert micros_to_usd(1) == Decimal("0.000001")
    assert str(micros_to_usd(1_500_000)) == "1.500000"
    assert str(micros_to_usd(-150)) == "-0.000150"


def test_format_usd_rounds_half_to_even_only_for_display() -> None:
    assert format_usd(5_000) == "$0.00"  # 0.005 → 0.00 (half to even)
    assert format_usd(15_000) == "$0.02"  # 0.015 → 0.02
    assert format_usd(1_234_500_000) == "$1,234.50"
    assert format_usd(-150, 6) == "-$0.000150"


def test_cost_is_tokens_times_price_rounded_up_to_the_micro_dollar() -> None:
    dos_ai = {"input_price_per_million": 500_000, "output_price_per_million": 1_500_000}
    assert cost_micros(prompt_tokens=1_000_000, completion_tokens=0, **dos_ai) == 500_000
    assert cost_micros(prompt_tokens=0, completion_tokens=1_000_000, **dos_ai) == 1_500_000
    assert cost_micros(prompt_tokens=1_000, completion_tokens=500, **dos_ai) == 1_250
    assert cost_micros(prompt_tokens=1, completion_tokens=0, **dos_ai) == 1  # half a micro-dollar, rounded up
    assert cost_micros(prompt_tokens=1_234, completion_tokens=567, **dos_ai) == 1_468
    assert cost_micros(prompt_tokens=0, completion_tokens=0, **dos_ai) == 0


@pytest.mark.parametrize(
    ("micros", "shown"),
    [
        (5_000_000, "$5.00"),
        (4_999_850, "$4.99985"),
        (150, "$0.00015"),
        (1, "$0.000001"),
        (320_200, "$0.3202"),
        (0, "$0.00"),
        (-1_468, "-$0.001468"),
        (12_345_678_900_000, "$12,345,678.90"),
    ],
)
def test_the_usd_filter_is_exact_with_at_least_two_decimals(micros: int, shown: str) -> None:
    assert usd(micros) == shown


def test_the_usd_filter_rounds_only_when_asked_and_usd_exact_shows_six_decimals() -> None:
    assert usd(4_999_850, 2) == "$5.00"
    assert usd_exact(4_999_850) == "$4.999850"
    assert usd(None) == "" and usd_exact(None) == ""


def test_exact_places_is_the_fewest_decimals_that_lose_nothing() -> None:
    assert [exact_places(m) for m in (0, 10_000, 1_000, 100, 10, 1)] == [2, 2, 3, 4, 5, 6]


def test_compact_numbers_for_axis_labels() -> None:
    assert [compact(n) for n in (0, 999, 1_000, 1_250, 15_000, 2_000_000, 12_500_000, 3_000_000_000)] == [
        "0",
        "999",
        "1k",
        "1.2k",
        "15k",
        "2M",
        "12M",
        "3B",
    ]


def test_percent_shows_small_shares_as_less_than_one_percent() -> None:
    assert [percent(f) for f in (0, 0.004, 0.195, 0.804, 1)] == ["0%", "<1%", "20%", "80%", "100%"]
