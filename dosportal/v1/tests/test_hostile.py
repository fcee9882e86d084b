"""What an attacker (or a broken upstream) tries against a live gateway on the shared PostgreSQL
and Redis: repeated client request ids, token budgets that dodge admission, bodies too large to
read, bursts, key guessing, and upstreams that leak names, cut streams or report absurd usage."""

from __future__ import annotations

import asyncio
import io
import json
import select
import socket
import time

import httpx
import pytest
from django.core.management import call_command

from accounts.models import User
from accounts.services import account_set_limits
from apikeys.models import ApiKey
from apikeys.services import api_key_create
from billing.models import CreditAccount, CreditHold, LedgerEntry, ServedModel, UsageRecord
from dosportal.testing.costs import parsed, token_cost
from dosportal.testing.rawhttp import raw_request, read_response
from dosportal.v1.validation import parse_completion

pytestmark = pytest.mark.django_db(transaction=True)

SIGNUP_MICROS = 5_000_000
# "Hello, world!!": 3 + 4 + ceil(14 / 4) = 11 estimated prompt tokens, as many as the fake upstream reports.
CHAT = {"model": "dos-ai", "max_tokens": 20, "messages": [{"role": "user", "content": "Hello, world!!"}]}
CALL_MICROS = 15  # 11 × $0.50/M + 6 × $1.50/M = 14.5 → 15
# A call charged from the estimate: "Hello, world!!" (3 punctuation marks, 11 other characters: 6) in one message
# (4 + 3: 13 prompt tokens) and "Hello from the fake upstream." (".", 28 other characters: 8 tokens):
# 13 × 0.50 + 8 × 1.50 = 18.5 → 19 micro-USD.
ESTIMATED_MICROS = 19


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(url: str, key: str, body: dict = CHAT, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers={**bearer(key), **headers}, timeout=30)


def stream_chat(url: str, key: str, body: dict = CHAT, **headers: str) -> tuple[httpx.Response, list[str]]:
    events = []
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json={**body, "stream": True}, headers={**bearer(key), **headers},
        timeout=30,
    ) as response:  # fmt: skip
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    return response, events


def assert_balance_ok(user: User) -> None:
    out = io.StringIO()
    call_command("balance", user.email, stdout=out)
    assert "OK: the balance equals the ledger sum." in out.getvalue()
    assert not CreditHold.objects.filter(user=user).exists()
    assert CreditAccount.objects.get(user=user).held_micros == 0


def error(message: str, type_: str, code: str) -> dict:
    return {"error": {"message": message, "type": type_, "code": code}}


# --- money: a client's own request id --------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
def test_the_same_client_request_id_twice_is_served_and_charged_twice(
    gateway, api_key, api_user, streamed, fake_upstream
):
    other = User.objects.create_user("other@example.com", "x-password-123456")
    other_key = api_key_create(owner=other, name="other")[1]
    calls = [(api_key, api_user), (api_key, api_user), (other_key, other)]

    answers = []
    for key, _ in calls:
        if streamed:
            response, events = stream_chat(gateway.url, key, **{"x-request-id": "client-42"})
            assert events[-1] == "[DONE]"
        else:
            response = chat(gateway.url, key, **{"x-request-id": "client-42"})
        answers.append(response)

    assert [response.status_code for response in answers] == [200, 200, 200]
    assert all(response.headers["x-client-request-id"] == "client-42" for response in answers)
    ours = [response.headers["x-request-id"] for response in answers]
    assert len(set(ours)) == 3
    columns = ("request_id", "client_request_id", "user_id", "status_code", "streamed", "cost_micros")
    records = list(UsageRecord.objects.order_by("id").values_list(*columns))
    assert records == [
        (ours[0], "client-42", api_user.pk, 200, streamed, CALL_MICROS),
        (ours[1], "client-42", api_user.pk, 200, streamed, CALL_MICROS),
        (ours[2], "client-42", other.pk, 200, streamed, CALL_MICROS),
    ]
    assert LedgerEntry.objects.filter(user=api_user, kind="usage").count() == 2
    assert LedgerEntry.objects.filter(user=other, kind="usage").count() == 1
    assert CreditAccount.objects.get(user=api_user).balance_micros == SIGNUP_MICROS - 2 * CALL_MICROS
    assert CreditAccount.objects.get(user=other).balance_micros == SIGNUP_MICROS - CALL_MICROS
    assert_balance_ok(api_user)
    assert_balance_ok(other)


# --- the token budget --------------------------------------------------------------------------


def completion(url: str, key: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}/v1/completions", json={"model": "dos-ai", "prompt": "Hi", **body}, headers=bearer(key),
                      timeout=30)  # fmt: skip


def test_the_larger_of_two_completion_budgets_is_what_is_admitted(gateway, api_key, api_user, fake_upstream):
    account_set_limits(user=api_user, requests_per_minute=1000, tokens_per_minute=2000)

    budget = {"max_completion_tokens": 1, "max_tokens": 100_000}
    response = completion(gateway.url, api_key, budget)

    assert response.status_code == 429
    # The prompt's bound, and the budget counted is max_tokens, the larger one.
    requested = token_cost({"model": "dos-ai", "prompt": "Hi", **budget}, parse_completion)
    assert requested - 100_000 < 150
    assert response.json() == error(
        f"Request too large for tokens per minute (TPM): limit 2000, requested {requested}. "
        "Send a shorter prompt or a smaller max_tokens.",
        "rate_limit_error",
        "rate_limit_exceeded",
    )
    assert response.headers["x-should-retry"] == "false"
    assert fake_upstream.requests == []
    assert not UsageRecord.objects.exists()
    assert not CreditHold.objects.exists()


@pytest.mark.parametrize(
    ("budget", "admitted"),
    [
        ({"max_completion_tokens": 1, "max_tokens": 500}, 500),
        ({"max_completion_tokens": 500, "max_tokens": 1}, 500),
        ({}, 1024),  # no budget: the default is admitted and written into the forwarded body
        ({"max_tokens": 300, "n": 3}, 900),
        ({"max_tokens": 200, "best_of": 4, "n": 2}, 800),
    ],
)
def test_what_the_upstream_receives_never_exceeds_what_was_admitted(
    gateway, api_key, api_user, fake_upstream, budget, admitted
):
    account_set_limits(user=api_user, requests_per_minute=1000, tokens_per_minute=2000)

    response = completion(gateway.url, api_key, budget)

    assert response.status_code == 200
    prompt_bound = parsed({"model": "dos-ai", "prompt": "Hi", **budget}, parse_completion).prompt_bound
    assert response.headers["x-ratelimit-remaining-tokens"] == str(2000 - prompt_bound - admitted)
    [received] = fake_upstream.requests
    forwarded = received["body"]
    per_choice = max(forwarded.get("max_tokens") or 0, forwarded.get("max_completion_tokens") or 0)
    choices = max(forwarded.get("n") or 1, forwarded.get("best_of") or 1)
    assert 0 < per_choice * choices <= admitted
    assert_balance_ok(api_user)


@pytest.mark.parametrize("n_predict", [100_000, -1])
@pytest.mark.parametrize("endpoint", ["completions", "chat/completions"])
def test_a_budget_field_of_another_server_cannot_outgrow_the_admitted_one(
    gateway, api_key, api_user, fake_upstream, endpoint, n_predict
):
    account_set_limits(user=api_user, requests_per_minute=1000, tokens_per_minute=2000)
    prompt = {"prompt": "Hi"} if endpoint == "completions" else {"messages": [{"role": "user", "content": "Hi"}]}

    response = httpx.post(
        f"{gateway.url}/v1/{endpoint}",
        json={"model": "dos-ai", **prompt, "max_tokens": 5, "n_predict": n_predict},
        headers=bearer(api_key),
        timeout=30,
    )

    # Either refused (too large for the TPM limit, or -1 — llama.cpp's "no limit" — is not a
    # budget), or forwarded with a budget no larger than the one admitted.
    if response.status_code == 429:
        assert fake_upstream.requests == []
    elif n_predict == -1:
        assert response.status_code == 400
        assert response.json()["error"] == {
            "message": "Invalid type for 'n_predict': expected an integer between 1 and 2147483647.",
            "type": "invalid_request_error",
            "code": "invalid_value",
        }
        assert fake_upstream.requests == []
    else:
        assert response.status_code == 200
        forwarded = fake_upstream.requests[0]["body"]
        assert 1 <= forwarded.get("n_predict", 5) <= 5


def test_200_kb_of_tools_cannot_pass_a_2000_tpm_limit(gateway, api_key, api_user, fake_upstream):
    account_set_limits(user=api_user, requests_per_minute=1000, tokens_per_minute=2000)
    tools = [
        {"type": "function", "function": {"name": f"tool_{i}", "description": "x" * 20_000, "parameters": {}}}
        for i in range(10)
    ]

    response = chat(gateway.url, api_key, {**CHAT, "tools": tools})

    assert response.status_code == 429
    body = response.json()["error"]
    assert (body["type"], body["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert body["message"].startswith("Request too large for tokens per minute (TPM): limit 2000, requested ")
    assert int(body["message"].split("requested ")[1].split(".")[0]) > 50_000
    assert fake_upstream.requests == []
    assert not UsageRecord.objects.exists()
    assert not CreditHold.objects.exists()


# --- bodies too large to read ------------------------------------------------------------------


def test_a_256_mb_content_length_without_a_key_is_413_before_any_byte_is_read(gateway):
    host, port = gateway.url.removeprefix("http://").split(":")
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {256 * 1024 * 1024}\r\n\r\n"
    )
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(head.encode())  # headers only: not one byte of the body follows
        response = read_response(sock)
    elapsed = time.monotonic() - started

    assert response.status == 413
    assert response.json() == error(
        "Request body is larger than the limit of 1048576 bytes.", "invalid_request_error", "request_too_large"
    )
    assert response.headers["connection"] == "close"
    assert elapsed < 1.0, elapsed


def test_a_chunked_body_growing_past_the_limit_is_413_without_reading_the_rest(
    gateway_factory, api_key, transactional_db, fake_upstream
):
    # The same settings as the fuzz suite's gateway: one server process for both.
    gateway = gateway_factory(DOS_AI_AUTH_FAILURES_PER_MINUTE="1000000", DOS_AI_MAX_REQUEST_BYTES="65536")
    host, port = gateway.url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {api_key}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b'{"model": "dos-ai", "messages": [{"role": "user", "content": "' + b"x" * 16_000
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode())
        try:
            while sent < 8 * 1024 * 1024 and not select.select([sock], [], [], 0.01)[0]:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                chunk = b"x" * 16_000
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: read its answer
        response = read_response(sock)

    assert response.status == 413
    assert response.json() == error(
        "Request body is larger than the limit of 65536 bytes.", "invalid_request_error", "request_too_large"
    )
    assert sent < 2 * 1024 * 1024, sent  # it answered long before the client stopped sending
    assert fake_upstream.requests == []
    assert not UsageRecord.objects.exists()


# --- bursts and key guessing -------------------------------------------------------------------


def test_1000_concurrent_requests_admit_exactly_the_rpm(gateway, api_key, api_user, fake_upstream):
    account_set_limits(user=api_user, requests_per_minute=10, tokens_per_minute=10_000_000)

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=limits, timeout=120) as client:
            answers = await asyncio.gather(
                *(client.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=bearer(api_key))
                  for _ in range(1000))
            )  # fmt: skip
        return [response.status_code for response in answers]

    statuses = asyncio.run(burst())

    assert statuses.count(200) == 10
    assert statuses.count(429) == 990
    assert UsageRecord.objects.filter(status_code=200).count() == 10
    assert_balance_ok(api_user)


def test_wrong_keys_from_one_address_are_401_then_429_and_the_block_is_per_address(
    gateway_factory, api_key, transactional_db
):
    # Behind a trusted proxy the client is the X-Forwarded-For address: two clients from one test.
    gateway = gateway_factory(DOS_AI_AUTH_FAILURES_PER_MINUTE="5", DOS_AI_TRUSTED_PROXIES="127.0.0.1")
    wrong = "dos_sk_" + "A" * 32

    def models(key: str, client: str) -> httpx.Response:
        return httpx.get(f"{gateway.url}/v1/models", headers={**bearer(key), "X-Forwarded-For": client}, timeout=10)

    guesses = [models(wrong, "203.0.113.7") for _ in range(7)]
    valid_from_blocked = models(api_key, "203.0.113.7")
    valid_from_other = models(api_key, "203.0.113.8")
    wrong_from_other = models(wrong, "203.0.113.8")

    assert [response.status_code for response in guesses] == [401] * 5 + [429] * 2
    for refused in guesses[5:]:
        wait = refused.headers["retry-after"]
        assert 1 <= int(wait) <= 60
        assert refused.json() == error(
            f"Too many requests with an invalid API key from this address. Retry after {wait}s.",
            "rate_limit_error",
            "rate_limit_exceeded",
        )
    # Documented in dosportal.v1.ratelimit.AuthFailureGuard: a blocked address is refused for keys
    # that are not found, but a valid key from it is served; other addresses are not affected.
    assert valid_from_blocked.status_code == 200
    assert valid_from_other.status_code == 200
    assert wrong_from_other.status_code == 401


def test_a_key_used_only_to_list_models_gets_its_last_used_time(gateway, api_key, api_user):
    assert ApiKey.objects.get(owner=api_user).last_used_at is None

    assert httpx.get(f"{gateway.url}/v1/models", headers=bearer(api_key), timeout=10).status_code == 200

    assert ApiKey.objects.get(owner=api_user).last_used_at is not None
    assert not UsageRecord.objects.exists()


# --- a misbehaving upstream --------------------------------------------------------------------


@pytest.fixture
def hostile_gateway(gateway_factory, hostile_upstream, transactional_db):
    return gateway_factory(DOS_AI_UPSTREAM_URL=hostile_upstream.url)


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
def test_an_upstream_error_never_shows_the_upstream_model_name(
    hostile_gateway, hostile_upstream, api_key, api_user, streamed
):
    ServedModel.objects.create(
        name="dos-secret",
        upstream_model="acme/llama-3-70b-instruct",
        kind="chat",
        input_price_micros_per_million=500_000,
        output_price_micros_per_million=1_500_000,
    )
    hostile_upstream.mode = "model_in_error"

    response = chat(hostile_gateway.url, api_key, {**CHAT, "model": "dos-secret", "stream": streamed})

    assert hostile_upstream.requests[0]["body"]["model"] == "acme/llama-3-70b-instruct"
    assert response.status_code == 400
    assert response.json() == error(
        "The model `dos-secret` does not support tools; dos-secret is text-only.",
        "invalid_request_error",
        "upstream_rejected",
    )
    assert "acme" not in response.text
    record = UsageRecord.objects.get()
    assert (record.model, record.status_code, record.cost_micros) == ("dos-secret", 400, 0)
    assert_balance_ok(api_user)


UNFINISHED_STREAM = error(
    "The inference server ended the stream before it was complete.", "upstream_error", "upstream_unavailable"
)


def broken_stream(gateway, upstream, api_key: str, mode: str) -> tuple[list[str], UsageRecord]:
    """A stream the upstream breaks in `mode`: the events before the error that ends it (never
    [DONE]), and the call's usage record."""
    upstream.mode = mode

    response, events = stream_chat(gateway.url, api_key)

    assert response.status_code == 200
    assert "[DONE]" not in events
    assert json.loads(events[-1]) == UNFINISHED_STREAM
    return events[:-1], UsageRecord.objects.get()


def test_a_stream_that_ends_without_a_finish_reason_ends_with_an_error_and_is_charged_for_what_it_delivered(
    hostile_gateway, hostile_upstream, api_key, api_user
):
    delivered, record = broken_stream(hostile_gateway, hostile_upstream, api_key, "no_finish")

    assert "".join(json.loads(event)["choices"][0]["delta"].get("content", "") for event in delivered) == (
        "Hello from the fake upstream."
    )
    assert (record.status_code, record.prompt_tokens, record.completion_tokens, record.cost_micros) == (
        502, 13, 8, ESTIMATED_MICROS,
    )  # fmt: skip
    assert LedgerEntry.objects.get(user=api_user, kind="usage").amount_micros == -ESTIMATED_MICROS
    assert_balance_ok(api_user)


def test_a_stream_that_is_not_sse_ends_with_an_error_and_is_not_charged(
    hostile_gateway, hostile_upstream, api_key, api_user
):
    delivered, record = broken_stream(hostile_gateway, hostile_upstream, api_key, "not_sse")

    assert delivered == []
    assert (record.status_code, record.prompt_tokens, record.completion_tokens, record.cost_micros) == (502, 0, 0, 0)
    assert not LedgerEntry.objects.filter(kind="usage").exists()
    assert CreditAccount.objects.get(user=api_user).balance_micros == SIGNUP_MICROS
    assert_balance_ok(api_user)


def test_an_answer_larger_than_the_limit_is_a_502_and_costs_nothing(
    gateway_factory, hostile_upstream, api_key, api_user
):
    gateway = gateway_factory(DOS_AI_UPSTREAM_URL=hostile_upstream.url, DOS_AI_UPSTREAM_MAX_RESPONSE_BYTES="1048576")
    hostile_upstream.mode = "huge_answer"

    response = chat(gateway.url, api_key)

    assert response.status_code == 502
    assert response.json() == error(
        "The inference server sent an answer larger than 1048576 bytes.", "upstream_error", "upstream_unavailable"
    )
    record = UsageRecord.objects.get()
    assert (record.status_code, record.cost_micros) == (502, 0)
    assert CreditAccount.objects.get(user=api_user).balance_micros == SIGNUP_MICROS
    assert_balance_ok(api_user)


def test_an_event_that_never_ends_cuts_the_stream_with_an_error_and_charges_what_was_delivered(
    hostile_gateway, hostile_upstream, api_key, api_user
):
    hostile_upstream.mode = "endless_event"

    response, events = stream_chat(hostile_gateway.url, api_key)

    assert response.status_code == 200
    assert json.loads(events[-1]) == error(
        "The inference server sent an event longer than 16 MiB.", "upstream_error", "upstream_unavailable"
    )
    assert "".join(json.loads(event)["choices"][0]["delta"].get("content", "") for event in events[:-1]) == (
        "Hello from the fake upstream."
    )
    record = UsageRecord.objects.get()
    assert (record.status_code, record.prompt_tokens, record.completion_tokens, record.cost_micros) == (
        502, 13, 8, ESTIMATED_MICROS,
    )  # fmt: skip
    assert_balance_ok(api_user)


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
def test_usage_figures_past_2_31_are_not_believed(hostile_gateway, hostile_upstream, api_key, api_user, streamed):
    hostile_upstream.mode = "huge_usage"

    if streamed:
        response, events = stream_chat(hostile_gateway.url, api_key)
        assert events[-1] == "[DONE]"
    else:
        response = chat(hostile_gateway.url, api_key)

    assert response.status_code == 200
    record = UsageRecord.objects.get()
    assert (record.status_code, record.prompt_tokens, record.completion_tokens, record.cost_micros) == (
        200, 13, 8, ESTIMATED_MICROS,
    )  # fmt: skip
    assert CreditAccount.objects.get(user=api_user).balance_micros == SIGNUP_MICROS - ESTIMATED_MICROS
    assert_balance_ok(api_user)


def test_raw_request_helper_round_trips(gateway, api_key):
    # The raw client the fuzz and size tests rely on reads a normal answer exactly as httpx does.
    raw = raw_request(gateway.url, "GET", "/v1/models", headers=bearer(api_key))
    assert raw.status == 200
    assert raw.json()["object"] == "list"


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("client-42", "client-42"),
        ("a" * 100, "a" * 100),
        ("a" * 101, ""),  # longer than the column: not kept, not echoed
        ("two words", ""),
        ("semi;colon", ""),
        ("ünïcödé", ""),
    ],
)
def test_only_a_sane_client_request_id_is_kept_and_echoed_and_the_call_is_served_either_way(
    gateway, api_key, api_user, fake_upstream, given, kept
):
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=CHAT,
        headers={**bearer(api_key), "x-request-id": given.encode()},
        timeout=30,
    )

    assert response.status_code == 200
    assert response.headers.get("x-client-request-id", "") == kept
    assert response.headers["x-request-id"] != given
    record = UsageRecord.objects.get()
    assert (record.request_id, record.client_request_id, record.cost_micros) == (
        response.headers["x-request-id"], kept, CALL_MICROS,
    )  # fmt: skip
    assert_balance_ok(api_user)
