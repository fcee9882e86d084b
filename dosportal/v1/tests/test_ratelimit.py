"""Per-key rate limits over real HTTP: live uvicorn gateways sharing the test Redis.

Waits the limiter reports are checked against what they must be given when each
request was sent and answered (the server read its clock somewhere in between);
short windows (2 s) keep the suite fast.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import re
import time
from dataclasses import dataclass

import httpx
import httpx2
import openai
import pytest

from accounts.models import User
from accounts.services import account_set_limits, account_set_plan
from apikeys.services import api_key_create
from billing.models import CreditAccount, CreditHold
from dosportal.testing.costs import token_cost
from dosportal.testing.gateway import wait_for
from dosportal.testing.upstream import COMPLETION_TOKENS, PROMPT_TOKENS

pytestmark = pytest.mark.django_db(transaction=True)

WINDOW = 2.0  # seconds, the window of the `small` gateway
RL_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
)
HI = [{"role": "user", "content": "Hi"}]


@dataclass
class Sent:
    response: httpx.Response
    sent: float
    answered: float

    @property
    def status(self) -> int:
        return self.response.status_code

    def header(self, name: str) -> str:
        return self.response.headers[name]

    def remaining(self) -> tuple[int, int]:
        return int(self.header("x-ratelimit-remaining-requests")), int(self.header("x-ratelimit-remaining-tokens"))


def send(method: str, gateway, path: str, key: str, **kwargs) -> Sent:
    sent = time.monotonic()
    response = httpx.request(
        method, f"{gateway.url}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=30, **kwargs
    )
    return Sent(response, sent, time.monotonic())


def chat(gateway, key: str, max_tokens: int | None = 10, **body) -> Sent:
    payload = {"model": "dos-ai", "messages": HI, **body}
    if max_tokens is not None:
        payload["max_tokens"] = max_tokens
    return send("POST", gateway, "/v1/chat/completions", key, json=payload)


# What a finished chat call leaves in the window: the tokens the fake upstream reports it used.
USED = PROMPT_TOKENS + COMPLETION_TOKENS


def cost_of(max_tokens: int | None = 10, **body) -> int:
    """What `chat(…, max_tokens, **body)` costs in the TPM window: its prompt's bound and its budget."""
    payload = {"model": "dos-ai", "messages": HI, **body}
    if max_tokens is not None:
        payload["max_tokens"] = max_tokens
    return token_cost(payload)


def models(gateway, key: str) -> Sent:
    return send("GET", gateway, "/v1/models", key)


def retry_after_choices(entry: Sent, refused: Sent, window: float = WINDOW, aged: float = 0.0) -> set[int]:
    """Whole seconds until `entry` leaves the window, as seen when `refused` was refused
    (`aged`: seconds its entry was moved into the past by `age_window`)."""
    low_ms = window * 1000 - (refused.answered - entry.sent + aged) * 1000 - 2
    high_ms = window * 1000 - (refused.sent - entry.answered + aged) * 1000 + 2
    return set(range(max(1, math.ceil(low_ms / 1000)), max(1, math.ceil(high_ms / 1000)) + 1))


LONG_WINDOW = 30.0  # seconds, the window of the `aged` gateway, whose entries tests age by hand


def age_window(api_key: str, seconds: float) -> None:
    """Move every entry of the key's window `seconds` into the past, in Redis itself: time
    passes for the limiter without the test sleeping (and without a clock that could drift)."""
    import redis
    from django.conf import settings

    from apikeys.keys import hash_key
    from apikeys.models import ApiKey

    key_id = ApiKey.objects.get(hashed_key=hash_key(api_key)).pk
    client = redis.Redis.from_url(settings.REDIS_URL)
    base = f"dosportal:rl:{{{key_id}}}"
    for name in (f"{base}:req", f"{base}:tok"):
        for member, score in client.zrange(name, 0, -1, withscores=True):
            client.zadd(name, {member: score - seconds * 1000}, xx=True)


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def rate_limit_error(message: str) -> dict:
    return {"error": {"message": message, "type": "rate_limit_error", "code": "rate_limit_exceeded"}}


@pytest.fixture
def small(gateway_factory, transactional_db):
    return gateway_factory(DOS_AI_RATE_WINDOW_SECONDS=str(WINDOW))


@pytest.fixture
def aged(gateway_factory, transactional_db):
    return gateway_factory(DOS_AI_RATE_WINDOW_SECONDS=str(LONG_WINDOW))


def new_user(email: str, plan: str = "free") -> tuple[User, str]:
    user = User.objects.create_user(email, "x-password-123456")
    if plan != "free":
        account_set_plan(user=user, plan=plan)
    return user, api_key_create(owner=user, name="key")[1]


# --- exact boundaries ------------------------------------------------------------------


def test_the_limit_is_admitted_the_next_is_429_and_after_the_window_slides_one_more_fits(
    aged, api_key, api_user, fake_upstream
):
    account_set_limits(user=api_user, requests_per_minute=3, tokens_per_minute=100_000)

    first = chat(aged, api_key)
    age_window(api_key, 15)  # so that the 2nd and 3rd are still in the window when the 1st has left
    second, third = chat(aged, api_key), chat(aged, api_key)
    refused = chat(aged, api_key)

    assert [first.status, second.status, third.status] == [200, 200, 200]
    assert [r.remaining()[0] for r in (first, second, third)] == [2, 1, 0]
    assert refused.status == 429
    wait = int(refused.header("retry-after"))
    assert wait in retry_after_choices(first, refused, LONG_WINDOW, aged=15)
    assert wait >= 1
    assert refused.response.json() == rate_limit_error(
        f"Rate limit reached for requests per minute (RPM): limit 3, used 3, requested 1. Retry after {wait}s."
    )
    assert refused.remaining() == (0, 100_000 - 3 * USED)  # ended calls keep what they used
    assert len(fake_upstream.requests) == 3  # the refused one was not forwarded

    age_window(api_key, 15)  # the 1st is now more than 30 s old; the 2nd and 3rd about 15 s
    again = chat(aged, api_key)
    refused_again = chat(aged, api_key)

    assert again.status == 200
    assert again.remaining() == (0, 100_000 - 2 * USED - cost_of())  # the 2nd, the 3rd, and this one's worst case
    assert refused_again.status == 429
    assert int(refused_again.header("retry-after")) in retry_after_choices(second, refused_again, LONG_WINDOW, aged=15)


def test_tokens_are_limited_with_a_large_max_tokens_and_a_refused_request_consumes_nothing(
    aged, api_key, api_user, fake_upstream
):
    """Calls in flight count their worst case (max_tokens); once they end, what they used."""
    account_set_limits(user=api_user, requests_per_minute=100, tokens_per_minute=5000)
    cost = cost_of(2000)
    fake_upstream.response_delay = 1.0
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        running = [pool.submit(chat, aged, api_key, 2000) for _ in range(2)]
        wait_for(lambda: True if CreditHold.objects.count() == 2 else None, what="two calls in flight")
        refused = chat(aged, api_key, max_tokens=2000)
        first, second = sorted((future.result() for future in running), key=lambda sent: -sent.remaining()[1])
    fake_upstream.response_delay = 0
    small_one = chat(aged, api_key, max_tokens=10)

    assert (first.status, first.remaining()) == (200, (99, 5000 - cost))
    assert (second.status, second.remaining()) == (200, (98, 5000 - 2 * cost))
    assert refused.status == 429
    wait = int(refused.header("retry-after"))
    assert 1 <= wait <= LONG_WINDOW
    assert refused.response.json() == rate_limit_error(
        f"Rate limit reached for tokens per minute (TPM): limit 5000, used {2 * cost}, requested {cost}. "
        f"Retry after {wait}s."
    )
    assert refused.remaining() == (98, 5000 - 2 * cost)  # requests remaining unchanged by the refusal
    # The two ended: they keep what they used, and the next call fits at once.
    assert (small_one.status, small_one.remaining()) == (200, (97, 5000 - 2 * USED - cost_of(10)))
    assert len(fake_upstream.requests) == 3


def test_a_request_bigger_than_the_token_limit_is_refused_and_says_so(small, api_key, api_user, fake_upstream):
    account_set_limits(user=api_user, requests_per_minute=100, tokens_per_minute=5000)

    refused = chat(small, api_key, max_tokens=6000)
    admitted = chat(small, api_key, max_tokens=10)

    assert refused.status == 429
    assert refused.response.json() == rate_limit_error(
        f"Request too large for tokens per minute (TPM): limit 5000, requested {cost_of(6000)}. "
        "Send a shorter prompt or a smaller max_tokens."
    )
    assert int(refused.header("retry-after")) >= 1
    assert refused.header("x-should-retry") == "false"  # the SDKs will not retry what can never pass
    assert (admitted.status, admitted.remaining()) == (200, (99, 5000 - cost_of(10)))
    assert fake_upstream.requests and len(fake_upstream.requests) == 1


def test_token_cost_is_estimated_prompt_plus_max_tokens_times_n(gateway, api_key, fake_upstream):
    default = chat(gateway, api_key, max_tokens=None)  # DOS_AI_DEFAULT_MAX_TOKENS = 1024
    # Both budgets named: the upstream may obey either, so the larger one is admitted.
    budgeted = chat(gateway, api_key, max_tokens=500, max_completion_tokens=20, n=2)
    listing = models(gateway, api_key)  # listing costs a request and no tokens

    first, second = cost_of(None), cost_of(500, max_completion_tokens=20, n=2)
    assert first - 1024 == second - 1000 - len(',"max_completion_tokens":20,"n":2,"max_tokens":500')
    assert default.remaining() == (59, 100_000 - first)  # at its admission: its worst case
    assert budgeted.remaining() == (58, 100_000 - USED - second)  # the first has ended: what it used
    assert listing.remaining() == (57, 100_000 - 2 * USED)


# --- headers -----------------------------------------------------------------------


def test_every_response_for_a_known_key_carries_the_headers_and_they_count_down(
    small, api_key, api_user, fake_upstream
):
    account_set_limits(user=api_user, requests_per_minute=5, tokens_per_minute=1000)

    listing = models(small, api_key)
    completion = chat(small, api_key)
    bad_json = send("POST", small, "/v1/chat/completions", api_key, content=b"{nope")
    unknown_model = chat(small, api_key, model="gpt-17")
    unknown_detail = send("GET", small, "/v1/models/gpt-17", api_key)
    last = [models(small, api_key) for _ in range(3)]
    limited = models(small, api_key)
    unauthenticated = send("GET", small, "/v1/models", "dos_sk_" + "x" * 32)

    responses = [listing, completion, bad_json, unknown_model, unknown_detail, *last, limited]
    assert [r.status for r in responses] == [200, 200, 400, 404, 404, 200, 200, 200, 429]
    for response in responses:
        assert all(name in response.response.headers for name in RL_HEADERS), response.status
        assert response.header("x-ratelimit-limit-requests") == "5"
        assert response.header("x-ratelimit-limit-tokens") == "1000"
        assert response.header("x-ratelimit-reset-requests") != "0ms"
    left = 1000 - USED  # the completion's worst case while it ran, what it used once it ended
    assert [r.remaining() for r in responses] == [
        (4, 1000),
        (3, 1000 - cost_of()),
        (3, left),  # a bad body is answered before admission: nothing counted
        (3, left),  # so is an unknown model
        (3, left),  # and an unknown model's description
        (2, left),  # a listing is a request (of no tokens)
        (1, left),
        (0, left),
        (0, left),
    ]
    assert not any(name in unauthenticated.response.headers for name in RL_HEADERS)
    assert unauthenticated.status == 401


def test_a_request_refused_for_credit_carries_the_headers_and_consumes_nothing(small, api_key, api_user, fake_upstream):
    account_set_limits(user=api_user, requests_per_minute=5, tokens_per_minute=1000)
    before = models(small, api_key)
    CreditAccount.objects.filter(user=api_user).update(balance_micros=0)

    no_credit = chat(small, api_key)
    after = models(small, api_key)

    assert (before.status, no_credit.status, after.status) == (200, 402, 200)
    assert all(name in no_credit.response.headers for name in RL_HEADERS)
    assert after.remaining() == (3, 1000)  # the 402 took neither a request nor tokens
    assert fake_upstream.requests == []


def test_a_402s_headers_do_not_count_the_admission_it_gave_back(small, api_key, api_user):
    account_set_limits(user=api_user, requests_per_minute=5, tokens_per_minute=1000)
    before = models(small, api_key)
    CreditAccount.objects.filter(user=api_user).update(balance_micros=0)

    no_credit = chat(small, api_key)

    assert no_credit.status == 402
    assert no_credit.remaining() == before.remaining() == (4, 1000)


def test_resets_are_written_as_openai_writes_them(gateway_factory, gateway, small, api_key):
    tiny = gateway_factory(DOS_AI_RATE_WINDOW_SECONDS="0.12")

    for server, reset in ((small, "2s"), (gateway, "1m0s"), (tiny, "120ms")):
        admitted = models(server, api_key)

        assert admitted.header("x-ratelimit-reset-requests") == reset
        # A listing costs no tokens: the token window is at its full limit already.
        assert admitted.header("x-ratelimit-reset-tokens") == "0s"


def test_a_refusals_reset_is_when_the_newest_entry_leaves(small, api_key, api_user):
    account_set_limits(user=api_user, requests_per_minute=1, tokens_per_minute=1000)
    admitted = models(small, api_key)
    time.sleep(0.3)

    refused = models(small, api_key)

    match = re.fullmatch(r"(\d+)ms|(\d+(?:\.\d+)?)s", refused.header("x-ratelimit-reset-requests"))
    assert match, refused.header("x-ratelimit-reset-requests")
    reset_ms = int(match[1]) if match[1] else float(match[2]) * 1000
    low = WINDOW * 1000 - (refused.answered - admitted.sent) * 1000 - 2
    high = WINDOW * 1000 - (refused.sent - admitted.answered) * 1000 + 2
    assert low <= reset_ms <= high


# --- plans and overrides ---------------------------------------------------------------


def test_a_plan_change_applies_to_the_next_request(gateway, api_key, api_user):
    free = models(gateway, api_key)
    account_set_plan(user=api_user, plan="pro")
    pro = models(gateway, api_key)
    account_set_plan(user=api_user, plan="plus")
    plus = models(gateway, api_key)

    limits = [(r.header("x-ratelimit-limit-requests"), r.header("x-ratelimit-limit-tokens")) for r in (free, pro, plus)]
    assert limits == [("60", "100000"), ("300", "2000000"), ("120", "500000")]
    assert [r.remaining()[0] for r in (free, pro, plus)] == [59, 298, 117]  # one window, new limits


def test_an_override_wins_over_the_plan_and_clearing_it_returns_to_the_plan(gateway, api_key, api_user):
    account_set_plan(user=api_user, plan="pro")
    account_set_limits(user=api_user, requests_per_minute=2, tokens_per_minute=7000)
    overridden = [models(gateway, api_key) for _ in range(3)]
    account_set_limits(user=api_user, requests_per_minute=None, tokens_per_minute=None)
    cleared = models(gateway, api_key)

    assert [r.status for r in overridden] == [200, 200, 429]
    assert overridden[0].header("x-ratelimit-limit-requests") == "2"
    assert overridden[0].header("x-ratelimit-limit-tokens") == "7000"
    assert cleared.status == 200
    assert (cleared.header("x-ratelimit-limit-requests"), cleared.header("x-ratelimit-limit-tokens")) == (
        "300",
        "2000000",
    )
    assert cleared.remaining() == (297, 2_000_000)


# --- counters per key --------------------------------------------------------------------


def test_free_and_pro_keys_of_different_users_do_not_share_counters(small, served_models):
    free_user, free_key = new_user("free@example.com")
    account_set_limits(user=free_user, requests_per_minute=2, tokens_per_minute=100_000)
    _, pro_key = new_user("pro@example.com", plan="pro")

    free = [models(small, free_key) for _ in range(3)]
    pro = [models(small, pro_key) for _ in range(2)]

    assert [r.status for r in free] == [200, 200, 429]
    assert [r.status for r in pro] == [200, 200]
    assert [r.remaining()[0] for r in pro] == [299, 298]
    assert pro[0].header("x-ratelimit-limit-requests") == "300"


def test_two_keys_of_one_user_each_have_their_own_window(small, api_key, api_user):
    account_set_limits(user=api_user, requests_per_minute=2, tokens_per_minute=100_000)
    other_key = api_key_create(owner=api_user, name="second key")[1]

    first = [models(small, api_key) for _ in range(3)]
    second = [models(small, other_key) for _ in range(3)]

    assert [r.status for r in first] == [200, 200, 429]
    assert [r.status for r in second] == [200, 200, 429]
    assert [r.remaining()[0] for r in second] == [1, 0, 0]


# --- across processes --------------------------------------------------------------------


def test_three_processes_sharing_redis_admit_exactly_the_limit(gateway_factory, api_key, api_user):
    """200 concurrent requests on one key, spread over a 2-worker gateway and a 1-worker one."""
    limit = 37
    account_set_limits(user=api_user, requests_per_minute=limit, tokens_per_minute=100_000)
    # Small database pools: PostgreSQL's connections are shared with every other test run on the host.
    gateways = [gateway_factory(workers=2, DATABASE_POOL_MAX_SIZE="4"), gateway_factory(DATABASE_POOL_MAX_SIZE="4")]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=60,
            limits=httpx.Limits(max_connections=250, max_keepalive_connections=250),
        ) as client:
            return await asyncio.gather(*(client.get(f"{gateways[i % 2].url}/v1/models") for i in range(200)))

    responses = asyncio.run(burst())

    statuses = [r.status_code for r in responses]
    fail_open = [g.url for g in gateways if "fail-open" in g.logs()]  # a Redis timeout admits without limits
    assert (statuses.count(200), fail_open) == (limit, [])
    assert statuses.count(429) == 200 - limit
    refused = [r for r in responses if r.status_code == 429]
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
    assert {r.json()["error"]["code"] for r in refused} == {"rate_limit_exceeded"}
    assert {r.headers["x-ratelimit-remaining-requests"] for r in refused} == {"0"}
    assert models(gateways[1], api_key).status == 429


# --- the official SDK --------------------------------------------------------------------


def test_the_sdk_raises_rate_limit_error_without_retries(small, api_key, api_user, fake_upstream):
    account_set_limits(user=api_user, requests_per_minute=1, tokens_per_minute=100_000)
    client = openai.OpenAI(base_url=f"{small.url}/v1", api_key=api_key, max_retries=0)
    client.chat.completions.create(model="dos-ai", messages=HI, max_tokens=10)

    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="dos-ai", messages=HI, max_tokens=10)

    error = raised.value
    assert error.status_code == 429
    assert error.code == "rate_limit_exceeded"
    assert error.type == "rate_limit_error"
    wait = int(error.response.headers["retry-after"])
    assert wait in (1, 2)
    assert error.body["message"] == (
        f"Rate limit reached for requests per minute (RPM): limit 1, used 1, requested 1. Retry after {wait}s."
    )


def test_the_sdk_with_retries_waits_the_retry_after_and_then_succeeds(small, api_key, api_user, fake_upstream):
    account_set_limits(user=api_user, requests_per_minute=1, tokens_per_minute=100_000)
    assert chat(small, api_key).status == 200
    seen: list[tuple[str, float, int | None, str | None]] = []

    def on_request(request: httpx2.Request) -> None:
        seen.append(("request", time.monotonic(), None, None))

    def on_response(response: httpx2.Response) -> None:
        seen.append(("response", time.monotonic(), response.status_code, response.headers.get("retry-after")))

    http_client = httpx2.Client(event_hooks={"request": [on_request], "response": [on_response]})
    client = openai.OpenAI(base_url=f"{small.url}/v1", api_key=api_key, max_retries=2, http_client=http_client)

    completion = client.chat.completions.create(model="dos-ai", messages=HI, max_tokens=10)

    assert completion.choices[0].message.content
    assert [(kind, status) for kind, _, status, _ in seen] == [
        ("request", None),
        ("response", 429),
        ("request", None),
        ("response", 200),
    ]
    wait = int(seen[1][3])
    assert wait >= 1
    assert seen[2][1] - seen[1][1] >= wait - 0.05  # it waited the Retry-After before retrying
    http_client.close()


# --- Redis unreachable -------------------------------------------------------------------


def test_with_redis_unreachable_requests_are_admitted_without_limits_and_it_is_logged(
    gateway_factory, api_key, api_user, fake_upstream
):
    account_set_limits(user=api_user, requests_per_minute=1, tokens_per_minute=100)
    broken = gateway_factory(REDIS_URL="redis://127.0.0.1:1/0")

    responses = [models(broken, api_key), models(broken, api_key), chat(broken, api_key, max_tokens=500)]

    assert [r.status for r in responses] == [200, 200, 200]  # over both limits, yet admitted
    for response in responses:
        assert not any(name in response.response.headers for name in RL_HEADERS)
        assert response.response.headers["x-request-id"]
    assert "fail-open" in broken.logs()
