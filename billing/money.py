"""Conversions between USD amounts and integer micro-dollars, and request pricing."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

MICROS_PER_USD = 1_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000  # prices are per million tokens
MICRO_USD = Decimal("0.000001")


class InvalidAmount(ValueError):
    pass


class AmountTooLarge(InvalidAmount):
    """More digits than an exact conversion can carry."""


def usd_to_micros(amount: Decimal | str | int) -> int:
    """Exact conversion; refuses more than 6 decimals rather than rounding money silently."""
    try:
        value = Decimal(str(amount).strip())
    except InvalidOperation:
        raise InvalidAmount(f"not an amount: {amount!r}") from None
    if not value.is_finite():
        raise InvalidAmount(f"not an amount: {amount!r}")
    # Decimal arithmetic rounds to 28 digits: `value * 1_000_000` would turn
    # 1.0000000000000000000000000001 into exactly a dollar. quantize() refuses instead.
    try:
        whole_micros = value.quantize(MICRO_USD)
    except InvalidOperation:
        raise AmountTooLarge(f"{amount} is too large") from None
    if whole_micros != value:
        raise InvalidAmount(f"{amount} has more than 6 decimal places")
    return int(whole_micros.scaleb(6))


def micros_to_usd(micros: int) -> Decimal:
    return (Decimal(micros) / MICROS_PER_USD).quantize(Decimal("0.000001"))


def format_usd(micros: int, places: int = 2) -> str:
    """`$4.25`, `-$0.000150` (places=6): rounding only ever for display."""
    quantum = Decimal(1).scaleb(-places)
    value = (Decimal(micros) / MICROS_PER_USD).quantize(quantum, rounding=ROUND_HALF_EVEN)
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):,.{places}f}"


def cost_micros(
    *, prompt_tokens: int, completion_tokens: int, input_price_per_million: int, output_price_per_million: int
) -> int:
    """Tokens × price, rounded up to the next whole micro-dollar (never a fraction undercharged)."""
    numerator = prompt_tokens * input_price_per_million + completion_tokens * output_price_per_million
    return -(-numerator // TOKENS_PER_PRICE_UNIT)


def exact_places(micros: int) -> int:
    """The fewest decimals (2 to 6) that show `micros` without rounding."""
    for places in range(2, 6):
        if micros % (MICROS_PER_USD // 10**places) == 0:
            return places
    return 6


def common_places(amounts: Iterable[int]) -> int:
    """The decimals that show every amount of a table exactly, so its column lines up on the point."""
    return max((exact_places(micros) for micros in amounts), default=2)


class PricedPerMillion:
    """Anything priced like a served model: micro-USD per million input and output tokens.
    (The ServedModel row, and the gateway's copy of it read with the key.)"""

    input_price_micros_per_million: int
    output_price_micros_per_million: int

    def price(self, *, prompt_tokens: int, completion_tokens: int) -> int:
        """What these tokens cost, in micro-USD (rounded up)."""
        return cost_micros(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            input_price_per_million=self.input_price_micros_per_million,
            output_price_per_million=self.output_price_micros_per_million,
        )
