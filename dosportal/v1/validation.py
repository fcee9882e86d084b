"""Reading and checking /v1 request bodies: 413, 400 invalid_json / missing_field / invalid_value.

Only what the gateway needs is checked (model, the prompt, stream, token
counts); everything else is forwarded untouched for the upstream to judge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest

from dosportal.v1 import errors
from dosportal.v1.tokens import estimate_chat_prompt_tokens, estimate_input_tokens

MAX_CHOICES = 128


@dataclass(frozen=True)
class ParsedRequest:
    body: dict[str, Any]
    model: str
    stream: bool
    client_wants_usage: bool
    prompt_tokens: int  # estimated
    completion_tokens: int  # the most the response may contain (max_tokens × n)


def read_json_body(request: HttpRequest) -> dict[str, Any]:
    limit = settings.DOS_AI_MAX_REQUEST_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise errors.request_too_large(limit)
    try:
        raw = request.body
    except RequestDataTooBig:
        raise errors.request_too_large(limit) from None
    if len(raw) > limit:
        raise errors.request_too_large(limit)
    if not raw.strip():
        raise errors.bad_request("The request body is empty; send a JSON object.", "invalid_json")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise errors.bad_request("The request body is not valid JSON.", "invalid_json") from None
    if not isinstance(body, dict):
        raise errors.bad_request("The request body must be a JSON object.", "invalid_json")
    return body


def _require(body: dict[str, Any], field: str) -> Any:
    if field not in body or body[field] is None:
        raise errors.bad_request(f"Missing required parameter: '{field}'.", "missing_field")
    return body[field]


def _invalid(field: str, expected: str) -> errors.ApiError:
    return errors.bad_request(f"Invalid type for '{field}': expected {expected}.", "invalid_value")


def _optional_int(body: dict[str, Any], field: str, *, minimum: int, maximum: int | None = None) -> int | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum and value > maximum):
        bound = f" between {minimum} and {maximum}" if maximum else f" of at least {minimum}"
        raise _invalid(field, f"an integer{bound}")
    return value


def _model(body: dict[str, Any]) -> str:
    model = _require(body, "model")
    if not isinstance(model, str) or not model.strip():
        raise _invalid("model", "a non-empty string")
    return model


def _stream_flags(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _invalid("stream", "a boolean")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _invalid("stream_options", "an object")
    return stream, bool((options or {}).get("include_usage"))


def _completion_budget(body: dict[str, Any]) -> int:
    max_tokens = _optional_int(body, "max_completion_tokens", minimum=1)
    if max_tokens is None:
        max_tokens = _optional_int(body, "max_tokens", minimum=1)
    n = _optional_int(body, "n", minimum=1, maximum=MAX_CHOICES) or 1
    return (max_tokens or settings.DOS_AI_DEFAULT_MAX_TOKENS) * n


def _is_prompt(value: Any) -> bool:
    """A string, a list of strings, a list of token ids, or a list of token-id lists."""
    if isinstance(value, str):
        return True
    if not isinstance(value, list) or not value:
        return False
    if all(isinstance(item, str) for item in value):
        return True
    if all(isinstance(item, int) and not isinstance(item, bool) for item in value):
        return True
    return all(
        isinstance(item, list) and item and all(isinstance(t, int) and not isinstance(t, bool) for t in item)
        for item in value
    )


def parse_chat(body: dict[str, Any]) -> ParsedRequest:
    model = _model(body)
    messages = _require(body, "messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages", "a non-empty array of messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _invalid(f"messages[{index}]", "an object")
        if not isinstance(message.get("role"), str):
            if "role" not in message:
                raise errors.bad_request(f"Missing required parameter: 'messages[{index}].role'.", "missing_field")
            raise _invalid(f"messages[{index}].role", "a string")
    stream, wants_usage = _stream_flags(body)
    return ParsedRequest(
        body, model, stream, wants_usage, estimate_chat_prompt_tokens(messages), _completion_budget(body)
    )


def parse_completion(body: dict[str, Any]) -> ParsedRequest:
    model = _model(body)
    prompt = _require(body, "prompt")
    if not _is_prompt(prompt):
        raise _invalid("prompt", "a string, an array of strings, or an array of token ids")
    stream, wants_usage = _stream_flags(body)
    return ParsedRequest(body, model, stream, wants_usage, estimate_input_tokens(prompt), _completion_budget(body))


def parse_embedding(body: dict[str, Any]) -> ParsedRequest:
    model = _model(body)
    value = _require(body, "input")
    if not _is_prompt(value) or value == "":
        raise _invalid("input", "a non-empty string, an array of strings, or an array of token ids")
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ("float", "base64"):
        raise errors.bad_request("Invalid 'encoding_format': use 'float' or 'base64'.", "invalid_value")
    _optional_int(body, "dimensions", minimum=1)
    if body.get("stream"):
        raise errors.bad_request("Embeddings cannot be streamed.", "invalid_value")
    return ParsedRequest(body, model, False, False, estimate_input_tokens(value), 0)
