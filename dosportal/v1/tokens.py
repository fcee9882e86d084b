"""Token estimation for admission (rate limits and credit reservation).

Rule: ceil(characters / 4) per text, plus 4 tokens per chat message and 3 for
the reply's priming — OpenAI's published rule of thumb ("one token is about 4
characters of English") and its per-message overhead. A real tokenizer would
need the upstream model's vocabulary, which differs per upstream (and
tiktoken's files are a runtime download). The estimate only decides admission
and the credit held; the charge uses the token counts the upstream reports.
"""

from __future__ import annotations

import math
from typing import Any

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
TOKENS_REPLY_PRIMING = 3


def estimate_text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multi-part content: count the text parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def estimate_chat_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    total = TOKENS_REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE + estimate_text_tokens(_content_text(message.get("content")))
        if isinstance(message.get("name"), str):
            total += estimate_text_tokens(message["name"])
    return total


def estimate_input_tokens(value: Any) -> int:
    """A prompt or embeddings input: a string, a list of strings, or token arrays."""
    if isinstance(value, str):
        return estimate_text_tokens(value)
    if isinstance(value, list):
        if all(isinstance(item, int) for item in value):
            return len(value)
        return sum(estimate_input_tokens(item) for item in value)
    return 0
