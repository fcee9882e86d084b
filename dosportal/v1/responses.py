"""The Responses API's shapes (/v1/responses): where its usage, text and end are found.

The gateway meters it exactly like chat completions; only the shapes differ: usage is
`input_tokens` / `output_tokens` (inside the `response` object of the final event when
streaming), the text is in `output_text` parts and `response.output_text.delta` events,
and a stream ends with `response.completed` (or `response.incomplete`) and no [DONE].
"""

from __future__ import annotations

import json
import re
from typing import Any

TYPE_RE = re.compile(rb'"type"\s*:\s*"([a-z_.]+)"')
FINISHED_RE = re.compile(rb'"type"\s*:\s*"response\.(?:completed|incomplete)"')
FAILED_TYPES = frozenset({"response.failed", "error"})


def usage_fields(payload: dict[str, Any]) -> Any:
    """The usage object of a response, or of a streamed event that carries the response."""
    response = payload.get("response") if isinstance(payload.get("response"), dict) else payload
    return response.get("usage")


def output_text(payload: dict[str, Any]) -> str:
    """The text a (non-streamed) response delivered."""
    texts = []
    for item in payload.get("output") or []:
        if not isinstance(item, dict):
            continue
        for part in item.get("content") or []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
    return "".join(texts)


def delta_text(raw: bytes) -> str:
    """The text of one streamed event, if it is a text delta."""
    event = json.loads(raw)
    if isinstance(event, dict) and event.get("type") == "response.output_text.delta":
        delta = event.get("delta")
        return delta if isinstance(delta, str) else ""
    return ""


def event_type(raw: bytes) -> bytes | None:
    """The event's type (its first "type" key is the event's own: OpenAI writes it first)."""
    match = TYPE_RE.search(raw)
    return match[1] if match else None


def set_public_model(event: dict[str, Any], name: str) -> None:
    for holder in (event, event.get("response")):
        if isinstance(holder, dict) and "model" in holder:
            holder["model"] = name
