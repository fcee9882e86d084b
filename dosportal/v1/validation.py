"""Reading and checking /v1 request bodies: 413, 400 invalid_json / missing_field / invalid_value.

Only what the gateway needs is checked (model, the prompt, stream, token
counts); everything else is forwarded untouched for the upstream to judge.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest

from billing.models import ServedModel
from billing.settlement import MAX_TOKENS_PER_CALL
from dosportal.v1 import errors
from dosportal.v1.tokens import (
    TOKENS_PER_MESSAGE,
    TOKENS_REPLY_PRIMING,
    estimate_chat_prompt_tokens,
    estimate_content_tokens,
    estimate_input_tokens,
    estimate_json_tokens,
    estimate_request_extras,
    estimate_text_tokens,
    prompt_bound,
)

MAX_CHOICES = 128
MODEL_NAME_MAX_LENGTH = ServedModel._meta.get_field("name").max_length
# Every name an OpenAI-compatible server reads as "generate at most this many tokens" (OpenAI's
# two, llama.cpp's n_predict, TGI's max_new_tokens). The largest one sent is admitted; the last
# is the one written into the forwarded body when none is sent.
COMPLETION_BUDGET_FIELDS = ("max_completion_tokens", "n_predict", "max_new_tokens", "max_tokens")


@dataclass(frozen=True)
class ParsedRequest:
    body: dict[str, Any]
    model: str
    stream: bool
    client_wants_usage: bool
    prompt_bound: int  # the most prompt tokens the upstream can report (admission, the hold)
    completion_tokens: int  # the most the response may contain (max_tokens × n × prompts)
    prompt_estimate: int = 0  # charged for the prompt when the upstream reports no usage
    api: str = "completions"  # "responses" for /v1/responses: its usage fields and events differ

    @property
    def token_cost(self) -> int:
        """The call's worst case in tokens: what the rate-limit window is charged at admission."""
        return self.prompt_bound + self.completion_tokens


class _NotJson(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON number")


# Lone UTF-16 surrogates ("\udc00") are valid JSON escapes but not text: they cannot be
# encoded to send upstream. Only bodies that contain such an escape are walked for them.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
MAX_DEPTH = 64


def _check_values(value: Any) -> None:
    """No lone surrogates in any string or key; nesting no deeper than MAX_DEPTH."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise errors.bad_request(f"The request body is nested deeper than {MAX_DEPTH} levels.", "invalid_json")
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise errors.bad_request(
                    "The request body contains an invalid Unicode escape (a lone surrogate).", "invalid_json"
                ) from None
        elif isinstance(item, dict):
            stack.extend((key, depth + 1) for key in item)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _NotJson(f"{text} is out of range for a JSON number")
    return value


# One decoder for every body (json.loads with options would build a new one per call).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or the API's 400. The body must be UTF-8 (strictly: an
    encoded lone surrogate is not); NaN, Infinity and numbers that overflow to infinity are
    not JSON; neither is an escaped lone surrogate; nesting is bounded (a deeply nested body
    would exhaust the stack)."""
    if not raw.strip():
        raise errors.bad_request("The request body is empty; send a JSON object.", "invalid_json")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.bad_request("The request body is not valid UTF-8.", "invalid_json") from None
    try:
        body = _DECODER.decode(text)
    except _NotJson as error:
        raise errors.bad_request(f"The request body is not valid JSON: {error}.", "invalid_json") from None
    except RecursionError:
        raise errors.bad_request(
            f"The request body is nested deeper than {MAX_DEPTH} levels.", "invalid_json"
        ) from None
    except ValueError:
        raise errors.bad_request("The request body is not valid JSON.", "invalid_json") from None
    if not isinstance(body, dict):
        raise errors.bad_request("The request body must be a JSON object.", "invalid_json")
    if _SURROGATE_ESCAPE.search(raw) or raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
        _check_values(body)
    return body


def read_json_body(request: HttpRequest) -> dict[str, Any]:
    limit = settings.DOS_AI_MAX_REQUEST_BYTES
    try:
        raw = request.body
    except RequestDataTooBig:
        raise errors.request_too_large(limit) from None
    if len(raw) > limit:
        raise errors.request_too_large(limit)
    return parse_json_body(raw)


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


def lookup_name(model: str) -> str | None:
    """A model name worth looking up: no served model has a NUL or more than 100 characters."""
    if "\x00" in model or len(model) > MODEL_NAME_MAX_LENGTH:
        return None
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


def _completion_budget(
    body: dict[str, Any], *fields: str, prompts: int = 1, write_to: str | None = None
) -> tuple[int, dict[str, Any]]:
    """The most the upstream may generate, and the body to forward so it cannot generate more.

    Every field an upstream might honour counts: when a request names several
    (`max_tokens` and `max_completion_tokens`), the largest is admitted — the upstream
    may obey either. When it names none, the default budget is admitted and written
    into the forwarded body (`write_to`, else the last field), so what is forwarded never
    exceeds what was admitted. The budget is per choice (`n`, or `best_of` where the
    upstream generates that many) and per prompt (a /v1/completions prompt list is that
    many generations).
    """
    given = [
        value
        for field in fields
        if (value := _optional_int(body, field, minimum=1, maximum=MAX_TOKENS_PER_CALL)) is not None
    ]
    choices = max(
        _optional_int(body, "n", minimum=1, maximum=MAX_CHOICES) or 1,
        _optional_int(body, "best_of", minimum=1, maximum=MAX_CHOICES) or 1,
    )
    if given:
        return max(given) * choices * prompts, body
    default = settings.DOS_AI_DEFAULT_MAX_TOKENS
    return default * choices * prompts, {**body, write_to or fields[-1]: default}


def _prompt_count(prompt: Any) -> int:
    """How many prompts a /v1/completions `prompt` is: a string or one token list is one; a list
    of strings or of token lists is one each."""
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        return len(prompt)
    return 1


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


def _check_tools(body: dict[str, Any]) -> None:
    """`tools` and `functions`, when sent, are arrays of objects (the upstream judges the rest)."""
    for field in ("tools", "functions"):
        value = body.get(field)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise _invalid(field, "an array of objects")


def _check_content(index: int, content: Any) -> None:
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _invalid(f"messages[{index}].content", "a string or an array of content parts")
    for position, part in enumerate(content):
        where = f"messages[{index}].content[{position}]"
        if not isinstance(part, dict):
            raise _invalid(where, "an object")
        if not isinstance(part.get("type"), str):
            raise _invalid(f"{where}.type", "a string")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise _invalid(f"{where}.text", "a string")


def parse_chat(body: dict[str, Any], raw: bytes | None = None) -> ParsedRequest:
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
        _check_content(index, message.get("content"))
    _check_tools(body)
    _refuse_unmeterable(body, CHAT_UNMETERABLE)
    stream, wants_usage = _stream_flags(body)
    budget, forwarded = _completion_budget(body, *COMPLETION_BUDGET_FIELDS)
    estimate = estimate_chat_prompt_tokens(messages) + estimate_request_extras(body)
    return ParsedRequest(forwarded, model, stream, wants_usage, prompt_bound(body, raw), budget, estimate)


def parse_completion(body: dict[str, Any], raw: bytes | None = None) -> ParsedRequest:
    model = _model(body)
    prompt = _require(body, "prompt")
    if not _is_prompt(prompt):
        raise _invalid("prompt", "a string, an array of strings, or an array of token ids")
    suffix = body.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise _invalid("suffix", "a string")
    stream, wants_usage = _stream_flags(body)
    budget, forwarded = _completion_budget(body, *COMPLETION_BUDGET_FIELDS, prompts=_prompt_count(prompt))
    estimate = estimate_input_tokens(prompt) + estimate_text_tokens(suffix or "")
    return ParsedRequest(forwarded, model, stream, wants_usage, prompt_bound(body, raw), budget, estimate)


def parse_embedding(body: dict[str, Any], raw: bytes | None = None) -> ParsedRequest:
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
    return ParsedRequest(body, model, False, False, prompt_bound(body, raw), 0, estimate_input_tokens(value))


def _check_input_items(items: list[Any]) -> None:
    for index, item in enumerate(items):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise _invalid(where, "an object")
        content = item.get("content")
        if content is None or isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise _invalid(f"{where}.content", "a string or an array of content parts")
        for position, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _invalid(f"{where}.content[{position}]", "an object with a 'type'")
            if part["type"] in ("input_text", "output_text", "text") and not isinstance(part.get("text"), str):
                raise _invalid(f"{where}.content[{position}].text", "a string")


def _estimate_input_items(items: list[dict[str, Any]]) -> int:
    total = TOKENS_REPLY_PRIMING
    for item in items:
        total += TOKENS_PER_MESSAGE + estimate_content_tokens(item.get("content"))
        total += sum(
            estimate_json_tokens(value) for key, value in item.items() if key not in ("role", "content", "type")
        )
    return total


# Fields whose effect on the tokens the gateway cannot bound or meter. A custom `chat_template`
# (vLLM) is a Jinja program: a loop in it can render the prompt any number of times.
CHAT_UNMETERABLE = {
    "chat_template": "a custom 'chat_template' can render a prompt of any size, which cannot be metered; "
    "use the model's own template",
}
# The Responses API's server-side state: stored responses, conversations and prompt templates
# live on the upstream, out of the gateway's sight, and would be billed by nobody.
RESPONSES_UNMETERABLE = {
    "previous_response_id": "this gateway keeps no responses. Send the earlier turns as input items instead",
    "conversation": "this gateway keeps no conversations. Send the earlier turns as input items instead",
    "prompt": "stored prompt templates are expanded out of the gateway's sight and cannot be metered. "
    "Send the instructions and input themselves",
    "background": "background responses finish after the call, when nothing meters them",
    "chat_template": CHAT_UNMETERABLE["chat_template"],
}


def _refuse_unmeterable(body: dict[str, Any], fields: dict[str, str]) -> None:
    for field, why in fields.items():
        if body.get(field) not in (None, False):
            raise errors.bad_request(f"'{field}' is not supported: {why}.", "invalid_value")


def parse_responses(body: dict[str, Any], raw: bytes | None = None) -> ParsedRequest:
    """/v1/responses. The gateway keeps no state: `store` is forced off (a stored response could
    be fetched by anyone who holds the shared upstream credential), and what needs state on the
    upstream is refused with a clear 400 (RESPONSES_UNMETERABLE).

    Its budget is `max_output_tokens`, but an OpenAI-compatible server may also obey the chat
    names (`max_tokens`, `max_completion_tokens`, llama.cpp's `n_predict`, TGI's
    `max_new_tokens`): the largest of all of them is admitted, and with none of them the
    default is written into `max_output_tokens`."""
    model = _model(body)
    value = _require(body, "input")
    if isinstance(value, list):
        _check_input_items(value)
    elif not isinstance(value, str):
        raise _invalid("input", "a string or an array of input items")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _invalid("instructions", "a string")
    _refuse_unmeterable(body, RESPONSES_UNMETERABLE)
    _check_tools(body)
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _invalid("stream", "a boolean")
    budget, forwarded = _completion_budget(
        body, "max_output_tokens", *COMPLETION_BUDGET_FIELDS, write_to="max_output_tokens"
    )
    estimate = (
        _estimate_input_items(value) if isinstance(value, list) else estimate_text_tokens(value) + TOKENS_REPLY_PRIMING
    )
    estimate += estimate_text_tokens(instructions or "") + estimate_request_extras(body)
    return ParsedRequest(
        {**forwarded, "store": False}, model, stream, True, prompt_bound(body, raw), budget, estimate, api="responses"
    )
