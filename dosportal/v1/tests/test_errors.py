"""Every row of DESIGN.md's /v1 error table, with its exact body, over real HTTP."""

from __future__ import annotations

import httpx
import openai
import pytest

from billing.models import CreditAccount, UsageRecord
from dosportal.v1.upstream import map_upstream_status

pytestmark = pytest.mark.django_db(transaction=True)


def post(gateway, path: str, api_key: str | None, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    headers.update(kwargs.pop("headers", {}))
    return httpx.post(f"{gateway.url}{path}", headers=headers, timeout=30, **kwargs)


def error(message: str, type_: str, code: str) -> dict:
    return {"error": {"message": message, "type": type_, "code": code}}


CHAT = {"model": "dos-ai", "messages": [{"role": "user", "content": "Hi"}]}


def test_body_that_is_not_json_is_400_invalid_json(gateway, api_key):
    response = post(gateway, "/v1/chat/completions", api_key, content=b"{not json")

    assert response.status_code == 400
    assert response.json() == error("The request body is not valid JSON.", "invalid_request_error", "invalid_json")
    assert response.headers["x-ratelimit-limit-requests"] == "60"


def test_a_json_array_is_400_invalid_json(gateway, api_key):
    response = post(gateway, "/v1/chat/completions", api_key, json=[1, 2])

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_missing_messages_is_400_missing_field(gateway, api_key):
    response = post(gateway, "/v1/chat/completions", api_key, json={"model": "dos-ai"})

    assert response.status_code == 400
    assert response.json() == error("Missing required parameter: 'messages'.", "invalid_request_error", "missing_field")


def test_missing_model_is_400_missing_field(gateway, api_key):
    response = post(gateway, "/v1/embeddings", api_key, json={"input": "x"})

    assert response.json() == error("Missing required parameter: 'model'.", "invalid_request_error", "missing_field")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**CHAT, "messages": "hello"}, "Invalid type for 'messages': expected a non-empty array of messages."),
        ({**CHAT, "max_tokens": "ten"}, "Invalid type for 'max_tokens': expected an integer between 1 and 2147483647."),
        ({**CHAT, "max_tokens": 0}, "Invalid type for 'max_tokens': expected an integer between 1 and 2147483647."),
        ({**CHAT, "stream": "yes"}, "Invalid type for 'stream': expected a boolean."),
        ({**CHAT, "model": 7}, "Invalid type for 'model': expected a non-empty string."),
        ({**CHAT, "n": 1000}, "Invalid type for 'n': expected an integer between 1 and 128."),
        ({**CHAT, "messages": [{"content": "no role"}]}, "Missing required parameter: 'messages[0].role'."),
    ],
)
def test_wrong_types_are_400_with_a_clear_message(gateway, api_key, body, message):
    response = post(gateway, "/v1/chat/completions", api_key, json=body)

    assert response.status_code == 400
    assert response.json()["error"]["message"] == message
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["code"] in {"invalid_value", "missing_field"}


def test_missing_header_is_401(gateway):
    response = post(gateway, "/v1/chat/completions", None, json=CHAT)

    assert response.status_code == 401
    assert response.json() == error(
        "Missing API key. Send it as 'Authorization: Bearer dos_sk_...'.", "authentication_error", "invalid_api_key"
    )
    assert "x-ratelimit-limit-requests" not in response.headers
    assert response.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize(
    "header",
    [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer dos_sk_short",
        "Bearer sk-proj-abcdefabcdefabcdefabcdefabcdefab",
        "Bearer dos_sk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # right shape, wrong checksum
    ],
)
def test_malformed_keys_are_401_invalid_api_key(gateway, header):
    response = post(gateway, "/v1/chat/completions", None, json=CHAT, headers={"Authorization": header})

    assert response.status_code == 401
    assert response.json() == error("Invalid API key", "authentication_error", "invalid_api_key")


def test_unknown_model_is_404_model_not_found(gateway, api_key):
    response = post(gateway, "/v1/chat/completions", api_key, json={**CHAT, "model": "gpt-17"})

    assert response.status_code == 404
    assert response.json() == error("The model 'gpt-17' does not exist.", "invalid_request_error", "model_not_found")


@pytest.mark.parametrize("path", ["/v1/nope", "/v1", "/v1/chat/completions/", "/v1/assistants/x/threads"])
def test_unknown_path_is_404_not_found_in_json(gateway, path):
    response = httpx.get(f"{gateway.url}{path}")

    assert response.status_code == 404
    assert response.json() == error(f"Unknown API path: GET {path}", "invalid_request_error", "not_found")
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize(("method", "path", "allowed"), [("GET", "/v1/chat/completions", "POST"),
                                                         ("DELETE", "/v1/models", "GET"),
                                                         ("PUT", "/v1/embeddings", "POST")])  # fmt: skip
def test_wrong_method_is_405(gateway, method, path, allowed):
    response = httpx.request(method, f"{gateway.url}{path}")

    assert response.status_code == 405
    assert response.json() == error(
        f"Method {method} is not allowed here; use {allowed}.", "invalid_request_error", "method_not_allowed"
    )
    assert response.headers["allow"] == allowed


def test_body_over_the_limit_is_413(gateway_factory, api_key, transactional_db):
    gateway = gateway_factory(DOS_AI_MAX_REQUEST_BYTES="2048")
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 4000}]}

    response = post(gateway, "/v1/chat/completions", api_key, json=big)

    assert response.status_code == 413
    assert response.json() == error(
        "Request body is larger than the limit of 2048 bytes.", "invalid_request_error", "request_too_large"
    )


def test_default_limit_is_one_mebibyte(gateway, api_key):
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * (1024 * 1024)}]}

    response = post(gateway, "/v1/chat/completions", api_key, json=big)

    assert response.status_code == 413


def test_rate_limit_is_429_with_retry_after(gateway, api_key, api_user):
    from accounts.services import account_set_limits

    account_set_limits(user=api_user, requests_per_minute=1, tokens_per_minute=100_000)
    assert httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {api_key}"}).status_code == 200

    response = httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {api_key}"})

    assert response.status_code == 429
    wait = int(response.headers["retry-after"])
    assert 58 <= wait <= 60
    assert response.json() == error(
        f"Rate limit reached for requests per minute (RPM): limit 1, used 1, requested 1. Retry after {wait}s.",
        "rate_limit_error",
        "rate_limit_exceeded",
    )


def test_insufficient_credit_is_402(gateway, api_key, api_user):
    CreditAccount.objects.filter(user=api_user).update(balance_micros=0)

    response = post(gateway, "/v1/chat/completions", api_key, json=CHAT)

    assert response.status_code == 402
    assert response.json() == error(
        "Insufficient credit balance. Add credit to your account to continue.", "billing_error", "insufficient_balance"
    )


def test_upstream_down_is_502(gateway_factory, api_key, transactional_db):
    from dosportal.testing.gateway import free_port

    gateway = gateway_factory(DOS_AI_UPSTREAM_URL=f"http://127.0.0.1:{free_port()}/v1")

    response = post(gateway, "/v1/chat/completions", api_key, json=CHAT)

    assert response.status_code == 502
    assert response.json() == error(
        "The inference server is unavailable. Try again shortly.", "upstream_error", "upstream_unavailable"
    )
    assert UsageRecord.objects.get().status_code == 502


def test_upstream_500_is_502(gateway, api_key, fake_upstream):
    fake_upstream.mode = "error500"

    response = post(gateway, "/v1/chat/completions", api_key, json=CHAT)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unavailable"
    assert "CUDA" not in response.text  # the upstream's internals are not the client's business


def test_upstream_rejecting_our_credentials_is_502_not_401(gateway, api_key, fake_upstream):
    fake_upstream.mode = "unauthorized"

    response = post(gateway, "/v1/chat/completions", api_key, json=CHAT)

    assert response.status_code == 502


def test_upstream_sending_garbage_is_502(gateway, api_key, fake_upstream):
    fake_upstream.mode = "garbage"

    response = post(gateway, "/v1/chat/completions", api_key, json=CHAT)

    assert response.status_code == 502
    assert response.json() == error(
        "The inference server sent a response that is not JSON.", "upstream_error", "upstream_unavailable"
    )


def test_upstream_slower_than_the_timeout_is_504(gateway_factory, api_key, fake_upstream, transactional_db):
    gateway = gateway_factory(DOS_AI_UPSTREAM_TIMEOUT="0.5")
    fake_upstream.response_delay = 1.5

    response = post(gateway, "/v1/chat/completions", api_key, json=CHAT)

    assert response.status_code == 504
    assert response.json() == error(
        "The inference server did not answer in time.", "upstream_error", "upstream_timeout"
    )


def test_upstream_client_error_reaches_the_client_in_our_shape(gateway, api_key, fake_upstream):
    fake_upstream.mode = "context_length"

    with pytest.raises(openai.BadRequestError) as raised:
        openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=api_key, max_retries=0).chat.completions.create(**CHAT)

    assert raised.value.status_code == 400
    assert raised.value.body == {
        "message": "This model's maximum context length is 4096 tokens.",
        "type": "invalid_request_error",
        "code": "context_length_exceeded",
    }


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, b'{"error": {"message": "Bad top_k.", "code": "invalid_value"}}',
         (400, "Bad top_k.", "invalid_request_error", "invalid_value", False)),
        (422, b"<html>Unprocessable</html>",
         (422, "The inference server rejected the request (HTTP 422).", "invalid_request_error", "upstream_rejected",
          False)),
        (404, b'{"error": "no such route"}',
         (404, "no such route", "invalid_request_error", "upstream_rejected", False)),
        (401, b'{"error": {"message": "bad upstream key"}}',
         (502, "The inference server is unavailable. Try again shortly.", "upstream_error", "upstream_unavailable",
          False)),
        (429, b"", (502, "The inference server is unavailable. Try again shortly.", "upstream_error",
                    "upstream_unavailable", True)),
        (408, b"", (504, "The inference server did not answer in time.", "upstream_error", "upstream_timeout", True)),
        (503, b"\xff\xfe", (502, "The inference server is unavailable. Try again shortly.", "upstream_error",
                            "upstream_unavailable", True)),
    ],
    ids=["400-json", "422-html", "404-string", "401-ours", "429-ours", "408-timeout", "503-binary"],
)  # fmt: skip
def test_upstream_statuses_map_to_the_api_errors(status: int, body: bytes, expected: tuple) -> None:
    """The upstream's client errors reach the caller with its message; its own auth failures,
    overload and crashes are ours (502/504), worth another endpoint's try when retryable."""
    error = map_upstream_status(status, body)

    assert (error.status, error.message, error.type, error.code, error.retryable) == expected


def test_streamed_upstream_failure_is_502_before_the_stream_starts(gateway, api_key, fake_upstream):
    fake_upstream.mode = "error500"

    response = post(gateway, "/v1/chat/completions", api_key, json={**CHAT, "stream": True})

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unavailable"


def test_errors_never_come_as_html(gateway, api_key):
    responses = [
        httpx.get(f"{gateway.url}/v1/does/not/exist"),
        post(gateway, "/v1/chat/completions", api_key, content=b"\xff\xfe"),
        post(gateway, "/v1/completions", api_key, json={"model": "dos-ai", "prompt": [1, "mixed"]}),
        post(gateway, "/v1/embeddings", api_key, json={"model": "dos-ai-embed", "input": ""}),
    ]

    assert [r.status_code for r in responses] == [404, 400, 400, 400]
    assert all(r.headers["content-type"] == "application/json" for r in responses)
    assert all(set(r.json()["error"]) == {"message", "type", "code"} for r in responses)
