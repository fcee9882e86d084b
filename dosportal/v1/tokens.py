"""Token estimation for admission (rate limits and credit reservation).

Rule: ceil(characters / 4) per text, plus 4 tokens per chat message and 3 for
the reply's priming — OpenAI's published rule of thumb ("one token is about 4
characters of English") and its per-message overhead. A real tokenizer would
need the upstream model's vocabulary, which differs per upstream (and
tiktoken's files are a runtime download). The estimate only decides admission
and the credit held; the charge uses the token counts the upstream reports.

Everything the upstream turns into tokens is counted, not only the message text:
tool and function definitions, `response_format` schemas, `tool_choice`, tool calls
in assistant messages, every content part, and every element of `prompt` and
`input` arrays. Structured values (schemas, tool calls) count as their compact
JSON text. An image part counts `IMAGE_PART_TOKENS` (vision models spend from a
few hundred to a few thousand tokens on one); any other non-text part counts as
its JSON text (for audio that is its base64 data, an overestimate on the safe side).
"""

from __future__ import annotations

import json
import math
from typing import Any

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
TOKENS_REPLY_PRIMING = 3
IMAGE_PART_TOKENS = 1_500
IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image"})
# Request fields whose content the upstream renders into the prompt, besides the messages.
PROMPT_FIELDS = ("tools", "functions", "response_format", "tool_choice", "function_call", "text")


def estimate_text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def estimate_json_tokens(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return estimate_text_tokens(value)
    return estimate_text_tokens(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def estimate_content_tokens(content: Any) -> int:
    """A message's content: a string, or a list of parts (text, images, audio, files…)."""
    if isinstance(content, str):
        return estimate_text_tokens(content)
    if not isinstance(content, list):
        return estimate_json_tokens(content)
    total = 0
    for part in content:
        if isinstance(part, str):
            total += estimate_text_tokens(part)
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            total += estimate_text_tokens(part["text"])
        elif isinstance(part, dict) and part.get("type") in IMAGE_PART_TYPES:
            total += IMAGE_PART_TOKENS
        else:
            total += estimate_json_tokens(part)
    return total


def estimate_chat_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    total = TOKENS_REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE + estimate_content_tokens(message.get("content"))
        for field, value in message.items():
            if field in ("role", "content"):
                continue
            total += estimate_json_tokens(value)  # name, tool_calls, tool_call_id, function_call…
    return total


def estimate_request_extras(body: dict[str, Any]) -> int:
    """Tools, schemas and the like: what the upstream adds to the prompt beyond the messages."""
    return sum(estimate_json_tokens(body.get(field)) for field in PROMPT_FIELDS if field in body)


def estimate_input_tokens(value: Any) -> int:
    """A prompt or embeddings input: a string, a list of strings, or token arrays."""
    if isinstance(value, str):
        return estimate_text_tokens(value)
    if isinstance(value, list):
        if all(isinstance(item, int) for item in value):
            return len(value)
        return sum(estimate_input_tokens(item) for item in value)
    return 0
