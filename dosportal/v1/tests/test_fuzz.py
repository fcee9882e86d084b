"""Hypothesis against a live gateway: random JSON, wrong field types, odd unicode, odd paths
and methods at every /v1 endpoint.

Whatever is thrown, the answer is a documented status with the documented error body,
and nothing is written: no usage record, no ledger entry beyond the sign-up grant, no
credit hold, and (for 400/404 answers) no rate-limit slot. Requests go over a raw socket
(dosportal.testing.rawhttp) so bodies and paths reach the server byte for byte.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import pytest
import redis
from django.conf import settings as django_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.services import account_set_limits
from apikeys.models import ApiKey
from billing.models import CreditAccount, CreditHold, LedgerEntry, UsageRecord
from dosportal.testing.rawhttp import RawResponse, raw_request

pytestmark = pytest.mark.django_db(transaction=True)

RPM = 1000
MAX_BYTES = 65_536
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")),
    deadline=None,
    database=None,  # no .hypothesis/ folder in the work tree
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
# The documented (status, type, code) answers to a request that cannot be served.
DOCUMENTED = {
    (400, "invalid_request_error", "invalid_json"),
    (400, "invalid_request_error", "missing_field"),
    (400, "invalid_request_error", "invalid_value"),
    (401, "authentication_error", "invalid_api_key"),
    (404, "invalid_request_error", "model_not_found"),
    (404, "invalid_request_error", "not_found"),
    (405, "invalid_request_error", "method_not_allowed"),
    (413, "invalid_request_error", "request_too_large"),
    (429, "rate_limit_error", "rate_limit_exceeded"),
}
POST_ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")


@dataclass
class Target:
    url: str
    key: str
    key_id: int
    user_id: int
    balance: int

    def send(self, method: str, target: str | bytes, body: bytes = b"", *, key: str | None = "valid") -> RawResponse:
        headers = {"Content-Type": "application/json"}
        if key == "valid":
            headers["Authorization"] = f"Bearer {self.key}"
        elif key is not None:
            headers["Authorization"] = key
        return raw_request(self.url, method, target, headers=headers, body=body)


@pytest.fixture
def target(gateway_factory, api_key, api_user, transactional_db) -> Target:
    # A gateway of its own: a high failed-key limit (the fuzz sends wrong keys on purpose and
    # must not block 127.0.0.1 for the other tests' gateways) and a small body limit.
    gateway = gateway_factory(DOS_AI_AUTH_FAILURES_PER_MINUTE="1000000", DOS_AI_MAX_REQUEST_BYTES=str(MAX_BYTES))
    account_set_limits(user=api_user, requests_per_minute=RPM, tokens_per_minute=10_000_000)
    balance = CreditAccount.objects.get(user=api_user).balance_micros
    return Target(gateway.url, api_key, ApiKey.objects.get(owner=api_user).pk, api_user.pk, balance)


def assert_refused_and_nothing_written(
    target: Target, response: RawResponse, method: str = "POST", *, slot_free: bool = True
) -> None:
    assert response.status in {status for status, _, _ in DOCUMENTED}, (response.status, response.body[:300])
    assert response.headers["x-request-id"].startswith("req_")
    if method != "HEAD":
        assert response.headers["content-type"] == "application/json", response.body[:300]
        body = response.json()
        assert list(body) == ["error"], body
        assert sorted(body["error"]) == ["code", "message", "type"], body
        error = body["error"]
        assert all(isinstance(error[name], str) for name in ("message", "type", "code")), body
        assert (response.status, error["type"], error["code"]) in DOCUMENTED, (response.status, body)
        assert error["message"], body
    if slot_free and response.status in (400, 404) and "x-ratelimit-remaining-requests" in response.headers:
        assert response.headers["x-ratelimit-remaining-requests"] == str(RPM)  # no slot consumed
    assert_nothing_written(target, slot_free=slot_free)


def assert_nothing_written(target: Target, *, slot_free: bool = True) -> None:
    assert not UsageRecord.objects.exists()
    assert list(LedgerEntry.objects.values_list("user_id", "kind")) == [(target.user_id, "grant")]
    assert not CreditHold.objects.exists()
    account = CreditAccount.objects.get(user_id=target.user_id)
    assert (account.balance_micros, account.held_micros) == (target.balance, 0)
    if slot_free:
        assert slots_taken(target) == 0


def window_keys(target: Target) -> list[str]:
    return [f"dosportal:rl:{{{target.key_id}}}:{part}" for part in ("req", "tok", "sum")]


def slots_taken(target: Target) -> int:
    return redis.Redis.from_url(django_settings.REDIS_URL).zcard(window_keys(target)[0])


# --- strategies ---------------------------------------------------------------------------

ODD_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "dos-ai\x00",
        "\x00dos-ai",
        "\udc00",
        "\ud800",
        "a\udfffb",
        "\u202edos-ai",
        "\ufeffdos-ai",
        "dos‐ai",  # a Unicode hyphen
        "DOS-AI",
        "dos-ai ",
        "💩" * 50,
        "x" * 101,
        "x" * 5000,
        "../../etc/passwd",
        "%00",
        "\r\nX-Injected: 1",
        "ǅ\u0301\u0345",
    ]
)
TEXT = st.one_of(st.text(max_size=30), ODD_STRINGS)
HUGE_INTS = st.sampled_from([2**31, 2**63, 2**64 + 1, -(2**63) - 1, 10**100, -1, 0])
NUMBERS = st.one_of(st.integers(), HUGE_INTS, st.floats(allow_nan=True, allow_infinity=True))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)),
    max_leaves=12,
)


def not_a(*kinds: type) -> st.SearchStrategy[Any]:
    """Any JSON value that is none of `kinds` (bool counts as its own kind, not as int)."""

    def wrong(value: Any) -> bool:
        if isinstance(value, bool):
            return bool not in kinds
        return not isinstance(value, kinds)

    return JSON.filter(wrong)


NOT_POSITIVE_INT = st.one_of(
    not_a(int), st.integers(max_value=0), st.integers(min_value=2**31), st.sampled_from([1.0, 10.5, True])
)
BAD_TEXT_PART = st.fixed_dictionaries(
    {"type": st.just("text"), "text": st.one_of(st.none(), NUMBERS, st.dictionaries(TEXT, SCALARS), st.booleans())}
)
BAD_CONTENT = st.one_of(
    NUMBERS.filter(lambda value: not isinstance(value, bool)),
    st.booleans(),
    st.dictionaries(TEXT, SCALARS, min_size=1),
    st.lists(BAD_TEXT_PART, min_size=1, max_size=3),
    st.lists(st.one_of(SCALARS.filter(lambda value: value is not None), st.lists(SCALARS)), min_size=1, max_size=3),
    st.lists(st.fixed_dictionaries({"type": not_a(str)}), min_size=1, max_size=2),
)
BAD_MESSAGES = st.one_of(
    not_a(list),
    st.just([]),
    st.lists(not_a(dict), min_size=1, max_size=3),
    st.lists(st.fixed_dictionaries({"content": TEXT}), min_size=1, max_size=2),  # no role
    st.lists(st.fixed_dictionaries({"role": not_a(str), "content": TEXT}), min_size=1, max_size=2),
    st.lists(st.fixed_dictionaries({"role": st.just("user"), "content": BAD_CONTENT}), min_size=1, max_size=2),
)
BAD_PROMPT = st.one_of(
    st.none(),
    NUMBERS,
    st.booleans(),
    st.dictionaries(TEXT, SCALARS),
    st.just([]),
    st.lists(st.one_of(st.none(), st.booleans(), st.floats(), st.dictionaries(TEXT, SCALARS)), min_size=1),
    st.lists(st.lists(TEXT, min_size=1), min_size=1, max_size=3),
    st.tuples(TEXT, st.integers()).map(list),  # strings and token ids mixed
)
BAD_MODEL = st.one_of(not_a(str), st.sampled_from(["", "   ", "\t\n"]))
UNKNOWN_MODEL = st.one_of(TEXT, ODD_STRINGS).filter(
    lambda name: name.strip() and name not in ("dos-ai", "dos-ai-embed")
)

VALID = {
    "/v1/chat/completions": {"model": "dos-ai", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5},
    "/v1/completions": {"model": "dos-ai", "prompt": "Hi", "max_tokens": 5},
    "/v1/embeddings": {"model": "dos-ai-embed", "input": "Hi"},
}
# For each endpoint, the fields whose wrong value alone makes a valid body a 4xx.
BREAKERS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "/v1/chat/completions": {
        "model": BAD_MODEL,
        "messages": BAD_MESSAGES,
        "max_tokens": NOT_POSITIVE_INT,
        "max_completion_tokens": NOT_POSITIVE_INT,
        "n": st.one_of(NOT_POSITIVE_INT, st.integers(min_value=129)),
        "stream": not_a(bool, type(None)),
        "stream_options": not_a(dict, type(None)),
    },
    "/v1/completions": {
        "model": BAD_MODEL,
        "prompt": BAD_PROMPT,
        "suffix": not_a(str, type(None)),
        "max_tokens": NOT_POSITIVE_INT,
        "n": st.one_of(NOT_POSITIVE_INT, st.integers(min_value=129)),
        "best_of": st.one_of(NOT_POSITIVE_INT, st.integers(min_value=129)),
        "stream": not_a(bool, type(None)),
        "stream_options": not_a(dict, type(None)),
    },
    "/v1/embeddings": {
        "model": BAD_MODEL,
        "input": st.one_of(BAD_PROMPT, st.just("")),
        "encoding_format": JSON.filter(lambda value: value not in (None, "float", "base64")),
        "dimensions": st.one_of(not_a(int, type(None)), st.integers(max_value=0)),
        "stream": st.sampled_from([True, 1, "yes", [1], {"a": 1}]),
    },
}
for _fields in BREAKERS.values():
    # A present-but-null or absent field is the default, not an error: only these break a body.
    for _name in ("max_tokens", "max_completion_tokens", "n", "best_of", "dimensions"):
        if _name in _fields:
            _fields[_name] = _fields[_name].filter(lambda value: value is not None)
NOISE = st.dictionaries(
    TEXT.filter(lambda name: name not in {"model", "messages", "prompt", "input", "tools", "functions"}),
    JSON,
    max_size=3,
)


def encode(value: Any, how: str) -> bytes:
    """JSON text as a client might send it: ASCII with escapes (a lone surrogate as \\udc00,
    NaN/Infinity written raw, as Python does), or raw UTF-8 (a lone surrogate as the three
    bytes UTF-8 would give it, which no decoder should accept)."""
    if how == "escaped":
        return json.dumps(value).encode()
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def broken_bodies(draw: st.DrawFn, endpoint: str) -> bytes:
    """A valid body with one or more fields broken, plus random extra fields."""
    body = {**VALID[endpoint], **draw(NOISE)}
    breakers = BREAKERS[endpoint]
    names = draw(st.lists(st.sampled_from(sorted(breakers)), min_size=1, max_size=3, unique=True))
    for name in names:
        body[name] = draw(breakers[name])
    if draw(st.booleans()) and "model" not in names:
        body["model"] = draw(UNKNOWN_MODEL)
    return encode(body, draw(st.sampled_from(["escaped", "raw"])))


# json.loads decodes bytes with "surrogatepass" and also reads UTF-16 and UTF-32: a lone
# surrogate can arrive without any \\u escape in the body.
FIELD_ENDPOINTS = {"messages": "/v1/chat/completions", "prompt": "/v1/completions", "input": "/v1/embeddings"}
NOT_UTF8_SURROGATES = [
    pytest.param(json.dumps(body, ensure_ascii=False).encode(encoding, "surrogatepass"), id=f"{encoding}-{field}")
    for encoding in ("utf-8", "utf-16-le", "utf-32")
    for field, body in (
        ("model", {"model": "dos-ai\udc00", "messages": [{"role": "user", "content": "Hi"}]}),
        ("content", {"model": "dos-ai", "messages": [{"role": "user", "content": "Hi \udc00"}]}),
        ("prompt", {"model": "dos-ai", "prompt": "\ud800"}),
        ("input", {"model": "dos-ai-embed", "input": ["\udfff"]}),
    )
]
RAW_BODIES = st.one_of(
    st.sampled_from(
        [
            b"",
            b" ",
            b"null",
            b"[]",
            b"42",
            b'"dos-ai"',
            b"{",
            b"{}",
            b'{"model": NaN}',
            b'{"model": "dos-ai", "messages": [{"role": "user", "content": "Hi"}], "temperature": NaN}',
            b'{"model": "dos-ai", "messages": [{"role": "user", "content": "Hi"}], "top_p": Infinity}',
            b'{"model": "dos-ai", "messages": [{"role": "user", "content": "Hi"}], "top_p": -Infinity}',
            b'{"model": "dos-ai", "prompt": "Hi", "max_tokens": NaN}',
            b'{"model": "dos-ai-embed", "input": [1, 2, Infinity]}',
            b'{"model": "dos-ai", "messages": [{"role": "user", "content": "\\udc00"}]}',
            b'{"model": "dos-ai", "prompt": "a\\ud800b"}',
            b'{"model": "dos-ai-embed", "input": "\\udfff"}',
            b'{"model": "dos-ai\\u0000", "messages": [{"role": "user", "content": "Hi"}]}',
            b'{"model": "dos-ai", "messages": [{"role": "user", "content": [{"type": "text", "text": null}]}]}',
            b'{"model": "dos-ai", "messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}]}',
            b'{"model": "dos-ai", "messages": [{"role": "user", "content": [{"type": "text", "text": {}}]}]}',
            b'{"model": "dos-ai", "max_tokens": ' + b"9" * 5000 + b', "messages": []}',  # past int() digit limit
            b'{"model": "dos-ai", "max_tokens": 1e999, "messages": [{"role": "user", "content": "Hi"}]}',
            b"\xef\xbb\xbf{}",  # a UTF-8 byte-order mark
            b"\xff\xfe{\x00}\x00",  # UTF-16
            b"\x00" * 16,
            b'{"model": "dos-ai", "messages": [{"role": "user", "content": "\x00"}], "n": 0}',
        ]
    ),
    st.binary(max_size=200),
    st.integers(min_value=65, max_value=100_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(min_value=65, max_value=30_000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
    st.integers(min_value=1000, max_value=20_000).map(
        lambda depth: b'{"model": "dos-ai", "messages": ' + b"[" * depth + b"]" * depth + b"}"
    ),
    JSON.filter(lambda value: not isinstance(value, dict)).map(lambda value: json.dumps(value).encode()),
    st.integers(min_value=MAX_BYTES + 1, max_value=MAX_BYTES * 3).map(
        lambda size: b'{"model": "dos-ai", "prompt": "' + b"x" * size + b'"}'
    ),
)


# --- the properties -----------------------------------------------------------------------


@FUZZ
@given(endpoint=st.sampled_from(POST_ENDPOINTS), data=st.data())
def test_a_body_with_a_wrong_field_is_a_documented_4xx_and_writes_nothing(target, endpoint, data):
    body = data.draw(broken_bodies(endpoint))

    response = target.send("POST", endpoint, body)

    assert response.status in (400, 404), (response.status, body[:300], response.body[:300])
    assert_refused_and_nothing_written(target, response)


@FUZZ
@given(endpoint=st.sampled_from(POST_ENDPOINTS), body=RAW_BODIES)
def test_random_bytes_and_json_are_a_documented_4xx_and_write_nothing(target, endpoint, body):
    response = target.send("POST", endpoint, body)

    assert response.status in (400, 404, 413), (response.status, body[:300], response.body[:300])
    if len(body) > MAX_BYTES:
        assert response.status == 413
    assert_refused_and_nothing_written(target, response)


@FUZZ
@given(endpoint=st.sampled_from(POST_ENDPOINTS), body=st.one_of(RAW_BODIES, st.just(b'{"model": "dos-ai"}')))
def test_without_a_valid_key_the_body_is_never_judged(target, endpoint, body):
    key = None if len(body) % 2 else "Bearer dos_sk_" + "A" * 32
    response = target.send("POST", endpoint, body, key=key)

    assert response.status == (413 if len(body) > MAX_BYTES else 401), (response.status, response.body[:300])
    assert "x-ratelimit-remaining-requests" not in response.headers
    assert_refused_and_nothing_written(target, response)


ODD_PATHS = st.one_of(
    st.sampled_from(
        [
            "//v1/models",
            "///v1/models",
            "/V1/models",
            "/v1//models",
            "/V1/MODELS",
            "/v1/models/",
            "/v1/models/%00x",
            "/v1/models/%00",
            "/v1/models/dos-ai%00",
            "/v1/models/" + "a" * 4000,
            "/v1/models/%ED%B3%80",  # a lone surrogate as (invalid) UTF-8
            "/v1/models/%FF%FE",
            "/v1/models/%F0%9F%92%A9",
            "/v1/models/..%2f..%2fadmin",
            "/v1/models/dos-ai/extra",
            "/v1/unknown",
            "/v1/",
            "/v1",
            "/v1/%2e%2e/admin/",
            "/v1/chat/completions/x",
            "/v1/embeddings/",
            "/v1/models?x=%00&y=%FF",
            "/v1/models#frag",
            "/v1/completions;param",
        ]
    ),
    st.text(max_size=60).map(lambda text: "/v1/" + quote(text.encode("utf-8", "surrogatepass"), safe="/")),
    st.text(min_size=1, max_size=60).map(
        lambda text: "/v1/models/" + quote(text.encode("utf-8", "surrogatepass"), safe="")
    ),
)


def serves_get(path: str) -> bool:
    """Whether GET `path` is a successful listing or model lookup (uvicorn drops ?query and #fragment)."""
    base = unquote(path.split("?")[0].split("#")[0], errors="replace")
    return base in ("/v1/models", "/v1/models/dos-ai", "/v1/models/dos-ai-embed")


METHODS = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])
ENDPOINT_PATHS = st.sampled_from(["/v1/models", "/v1/models/dos-ai", *POST_ENDPOINTS])


@FUZZ
@given(path=st.one_of(ODD_PATHS, ENDPOINT_PATHS), method=METHODS, body=st.one_of(st.just(b""), RAW_BODIES))
def test_odd_paths_and_methods_are_json_404_or_405_and_write_nothing(target, path, method, body):
    if method == "GET" and serves_get(path):
        method = "DELETE"  # the GETs that succeed are covered elsewhere; here only refusals
    if method in ("GET", "HEAD", "DELETE", "OPTIONS"):
        body = b""
    redis.Redis.from_url(django_settings.REDIS_URL).delete(*window_keys(target))  # see model_lookup below

    response = target.send(method, path, body)

    if path in POST_ENDPOINTS and method == "POST":
        assert response.status in (400, 404, 413), (path, response.status, response.body[:300])
    elif len(body) > MAX_BYTES:
        assert response.status == 413
    else:
        assert response.status in (404, 405), (path, method, response.status, response.body[:300])
    if response.status == 405:
        assert response.headers["allow"] in ("GET", "POST")
    assert_refused_and_nothing_written(target, response, method, slot_free=True)


@pytest.mark.parametrize("path", ["//v1/models", "/V1/models", "/v1//models", "/v1/unknown", "/V1/chat/completions"])
def test_paths_that_look_like_the_api_are_json_404_not_html(target, path):
    response = target.send("GET", path)

    assert response.status == 404
    assert response.json() == {
        "error": {"message": f"Unknown API path: GET {path}", "type": "invalid_request_error", "code": "not_found"}
    }
    assert_nothing_written(target)


@pytest.mark.parametrize(
    ("path", "shown"),
    [("/v1/models/%00x", "x…"), ("/v1/models/dos-ai%00", "dos-ai…"), ("/v1/models/" + "a" * 150, "a" * 100 + "…")],
)
def test_a_model_id_with_nul_or_too_long_is_404_model_not_found(target, path, shown):
    response = target.send("GET", path)

    assert response.status == 404
    assert response.json() == {
        "error": {
            "message": f"The model '{shown}' does not exist.",
            "type": "invalid_request_error",
            "code": "model_not_found",
        }
    }
    assert_nothing_written(target, slot_free=False)


def test_a_404_for_an_unknown_model_id_takes_no_rate_limit_slot(target):
    response = target.send("GET", "/v1/models/no-such-model")

    assert response.status == 404
    assert response.headers["x-ratelimit-remaining-requests"] == str(RPM)
    assert slots_taken(target) == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"model": NaN}', "The request body is not valid JSON: NaN is not a JSON number."),
        (
            b'{"model": "dos-ai", "messages": [{"role": "user", "content": "Hi"}], "top_p": -Infinity}',
            "The request body is not valid JSON: -Infinity is not a JSON number.",
        ),
        (
            b'{"model": "dos-ai", "messages": [{"role": "user", "content": "\\udc00"}]}',
            "The request body contains an invalid Unicode escape (a lone surrogate).",
        ),
        (b"[" * 5000 + b"]" * 5000, "The request body is nested deeper than 64 levels."),
        (b'{"model": "dos-ai", "messages": ' + b"[" * 1000 + b"]" * 1000 + b"}", None),
        (
            b'{"model": "dos-ai", "messages": [{"role": "user", "content": [{"type": "text", "text": null}]}]}',
            "Invalid type for 'messages[0].content[0].text': expected a string.",
        ),
    ],
)
def test_the_issue_s_500s_are_400_with_an_exact_message(target, body, message):
    response = target.send("POST", "/v1/chat/completions", body)

    assert response.status == 400
    error = response.json()["error"]
    assert (error["type"], error["code"]) == (
        "invalid_request_error",
        "invalid_value" if "Invalid type" in (message or "") else "invalid_json",
    )
    if message is not None:
        assert error["message"] == message
    assert_nothing_written(target)


@pytest.mark.parametrize("field", ["temperature", "top_p", "presence_penalty"])
def test_a_number_too_large_for_a_double_is_400_not_forwarded(target, field, fake_upstream):
    # 1e999 is valid JSON syntax, but Python reads it as inf, which is not JSON: it must not reach
    # the upstream (httpx refuses to encode it) nor be served.
    body = b'{"model": "dos-ai", "messages": [{"role": "user", "content": "Hi"}], "%s": 1e999}' % field.encode()

    response = target.send("POST", "/v1/chat/completions", body)

    assert response.status == 400, (response.status, response.body[:300])
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert fake_upstream.requests == []
    assert_nothing_written(target)


@pytest.mark.parametrize("tools", ["search", 7, {"type": "function"}, [1], [None], True])
def test_tools_of_the_wrong_type_are_400_and_write_nothing(target, tools, fake_upstream):
    body = json.dumps({**VALID["/v1/chat/completions"], "tools": tools}).encode()

    response = target.send("POST", "/v1/chat/completions", body)

    assert response.status == 400, (response.status, response.body[:300])
    assert response.json()["error"]["code"] == "invalid_value"
    assert fake_upstream.requests == []
    assert_nothing_written(target)


@pytest.mark.parametrize("body", NOT_UTF8_SURROGATES)
def test_a_lone_surrogate_without_an_escape_is_400_invalid_json(target, body, fake_upstream):
    text = body.decode(
        "utf-16-le" if body[1:2] == b"\x00" else "utf-32" if body[:2] == b"\xff\xfe" else "utf-8", "surrogatepass"
    )
    endpoint = next(path for field, path in FIELD_ENDPOINTS.items() if f'"{field}"' in text)

    response = target.send("POST", endpoint, body)

    assert response.status == 400, (response.status, response.body[:300])
    assert response.json()["error"]["code"] == "invalid_json"
    assert fake_upstream.requests == []
    assert_nothing_written(target)


HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"))


@FUZZ
@given(
    authorization=st.one_of(
        HEADER_TEXT,
        HEADER_TEXT.map(lambda text: "Bearer " + text),
        st.text(
            alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", min_size=32, max_size=32
        ).map(lambda body: "Bearer dos_sk_" + body),
    ),
    path=st.sampled_from(["/v1/models", "/v1/models/dos-ai", *POST_ENDPOINTS]),
)
def test_any_authorization_header_but_a_valid_key_is_401(target, authorization, path):
    method = "GET" if path.startswith("/v1/models") else "POST"
    body = json.dumps(VALID[path]).encode() if method == "POST" else b""

    response = target.send(method, path, body, key=authorization.strip() or None)

    assert response.status == 401, (authorization, response.status, response.body[:300])
    assert "x-ratelimit-remaining-requests" not in response.headers
    assert_refused_and_nothing_written(target, response, method)
