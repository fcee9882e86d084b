"""The model catalogue a new installation starts with (admins edit it afterwards)."""

from __future__ import annotations

from typing import Any

SEED = [
    # name, upstream_model ("" = same name), kind, input and output micro-USD per 1M tokens
    ("dos-ai", "", "chat", 500_000, 1_500_000),
    ("dos-ai-embed", "", "embedding", 20_000, 0),
]


def ensure(served_model_class: Any, row: tuple[str, str, str, int, int]) -> Any:
    name, upstream, kind, input_price, output_price = row
    model, _ = served_model_class.objects.get_or_create(
        name=name,
        defaults={
            "upstream_model": upstream,
            "kind": kind,
            "input_price_micros_per_million": input_price,
            "output_price_micros_per_million": output_price,
        },
    )
    return model
