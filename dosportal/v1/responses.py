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


# Within an output item, what the model generated: message and reasoning text, refusals,
# function-call arguments (and names), custom tool input.
_GENERATED = ("text", "refusal", "arguments", "name", "input")


def output_text(payload: dict[str, Any]) -> str:
    """Everything a (non-streamed) response generated: text, reasoning, refusals, tool calls."""
    texts: list[str] = []
    output = payload.get("output")
    for item in output if isinstance(output, list) else ():
        if not isinstance(item, dict):
            continue
        texts.extend(item[name] for name in ("arguments", "input") if isinstance(item.get(name), str))
        for holder in ("content", "summary"):
            parts = item.get(holder)
            for part in parts if isinstance(parts, list) else ():
                if isinstance(part, dict):
                    texts.extend(part[name] for name in _GENERATED if isinstance(part.get(name), str))
    return "".join(texts)


def delta_text(raw: bytes) -> str:
    """The generated text one streamed event carries: every `*.delta` event (output text,
    reasoning text and summaries, refusals, function-call arguments), but not audio, whose
    delta is base64 data rather than text."""
    event = json.loads(raw)
    if not isinstance(event, dict):
        return ""
    kind = event.get("type")
    if isinstance(kind, str) and kind.endswith(".delta") and kind != "response.audio.delta":
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
