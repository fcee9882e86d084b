"""What the gateway admits for a request body: its token cost and the credit it holds.

Tests compute them the way the gateway does (dosportal.v1.validation and .tokens) for the bytes
an HTTP client sends: httpx's `json=` and the OpenAI SDK both send compact JSON, UTF-8, in any
key order (the size, which is what the bound counts, does not depend on it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from billing.money import cost_micros
from dosportal.v1.validation import ParsedRequest, parse_chat

DOS_AI_INPUT_PRICE = 500_000  # the seeded dos-ai prices, micro-USD per million tokens
DOS_AI_OUTPUT_PRICE = 1_500_000


def sent_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def parsed(body: dict[str, Any], parse: Callable[..., ParsedRequest] = parse_chat) -> ParsedRequest:
    return parse(body, sent_bytes(body))


def token_cost(body: dict[str, Any], parse: Callable[..., ParsedRequest] = parse_chat) -> int:
    """What the request costs in the key's TPM window at admission."""
    return parsed(body, parse).token_cost


def hold_micros(
    body: dict[str, Any],
    parse: Callable[..., ParsedRequest] = parse_chat,
    *,
    input_price: int = DOS_AI_INPUT_PRICE,
    output_price: int = DOS_AI_OUTPUT_PRICE,
) -> int:
    """The credit held for the request: its worst case, priced."""
    request = parsed(body, parse)
    return cost_micros(
        prompt_tokens=request.prompt_bound,
        completion_tokens=request.completion_tokens,
        input_price_per_million=input_price,
        output_price_per_million=output_price,
    )
