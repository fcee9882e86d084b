"""How many tokens a request can cost: an upper bound for admission, an estimate for charging.

Two numbers, for two jobs:

- **The bound** (`prompt_bound`) decides admission: the rate-limit window's token cost and
  the credit held. It must never be below what the upstream can report, or a key's spend
  limit, an account's balance and a TPM window could be passed by one prompt (20,000 `!`
  are 5,000 tokens at four characters a token and 20,000 to a real tokenizer). The bound
  is the size in bytes of the request body as it arrived: byte-level BPE tokenizers (GPT-2,
  Llama 3, Qwen, Mistral's Tekken…) and SentencePiece with byte fallback produce at most
  one token per UTF-8 byte of the text they read, every string the upstream can render
  into the prompt (messages, tools, schemas, vLLM's `documents`, anything else) is in the
  body, and a JSON escape is never shorter than the bytes it stands for. The body's own
  punctuation (`{"role":"user","content":""}` is 28 bytes) pays for the chat template's
  per-message special tokens; `DOS_AI_PROMPT_OVERHEAD_TOKENS` covers a template's fixed
  preamble. Media are the exception: an image part counts `DOS_AI_IMAGE_PART_TOKENS`
  instead of the bytes of its URL or base64 data (set it to your vision model's largest
  image), and audio or file data counts a quarter of its base64 length. Where the bound
  is not a true bound (an image bigger than the setting), the charge still never exceeds
  the hold (`billing.hotpath.SETTLE_SQL`), so no limit is passed; the difference is
  logged and counted (`dos_ai_written_off_micro_usd`).

- **The estimate** (`estimate_*`) is what a call is charged for the prompt when the
  upstream reports no usage (a stream the client cut off before the final usage chunk,
  an upstream that never sends usage, a worker that died mid-stream): ASCII letters,
  digits and spaces count a quarter of a token each (OpenAI's "one token is about four
  characters of English"), every other character — punctuation, CJK, emoji — a whole
  token, so runs of punctuation or non-Latin text are not charged at a quarter of their
  cost. It is never above the bound.

The completion side of both is the request's completion budget (validation.py).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from django.conf import settings

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
TOKENS_REPLY_PRIMING = 3
IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image"})
DATA_PART_TYPES = frozenset({"input_audio", "file", "input_file", "audio"})
# Request fields whose content the upstream renders into the prompt, besides the messages.
PROMPT_FIELDS = ("tools", "functions", "response_format", "tool_choice", "function_call", "text", "documents")
# Anything but ASCII letters, digits and whitespace is a token of its own in the estimate.
_DENSE = re.compile(r"[^A-Za-z0-9\s]")
# Only a body that mentions one of these can hold a media part worth walking for.
_MEDIA_MARKERS = (b"image", b"audio", b"file")


def estimate_text_tokens(text: str) -> int:
    dense = len(_DENSE.findall(text))
    return dense + math.ceil((len(text) - dense) / CHARS_PER_TOKEN)


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
            total += settings.DOS_AI_IMAGE_PART_TOKENS
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


def body_size(body: dict[str, Any]) -> int:
    """The UTF-8 size of a body given as an object (tests, and callers without the raw bytes)."""
    return len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())


def prompt_bound(body: dict[str, Any], raw: bytes | None = None) -> int:
    """The most prompt tokens the upstream can report for this body (see the module's docstring)."""
    size = len(raw) if raw is not None else body_size(body)
    if raw is None or any(marker in raw for marker in _MEDIA_MARKERS):
        media_bytes, media_tokens = _media(body)
        size = max(0, size - media_bytes) + media_tokens
    return size + settings.DOS_AI_PROMPT_OVERHEAD_TOKENS


def _media(body: dict[str, Any]) -> tuple[int, int]:
    """(bytes of media payloads in the body, the tokens they count instead)."""
    media_bytes = media_tokens = 0
    stack: list[Any] = [body]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind in IMAGE_PART_TYPES:
            media_bytes += _payload_bytes(item)
            media_tokens += settings.DOS_AI_IMAGE_PART_TOKENS
        elif kind in DATA_PART_TYPES:
            payload = _payload_bytes(item)
            media_bytes += payload
            media_tokens += math.ceil(payload / CHARS_PER_TOKEN)
        else:
            stack.extend(value for value in item.values() if isinstance(value, dict | list))
    return media_bytes, media_tokens


def _payload_bytes(part: dict[str, Any]) -> int:
    """The size of the strings inside a media part (its URL or base64 data)."""
    total, stack = 0, list(part.values())
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            total += len(value.encode())
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return total
