"""Redis beyond one plain server: over TLS (rediss://), and Sentinel with a failover.

Sentinel: the primary is killed under /v1 load and a replica takes over.

A live gateway reaches Redis only through three sentinels (REDIS_SENTINELS, REDIS_URL empty).
What users get, in order: exact limits; while the sentinels have not yet promoted the replica,
calls fail open (200, no rate-limit headers, charged as usual) and nothing answers 5xx; once the
new primary answers, exact limits again, with the windows written before the switch still
counted (they were replicated); and a concurrency slot whose release was lost in the switch is
freed by its lease, not kept.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from accounts.services import account_set_limits
from apikeys.models import ApiKey
from apikeys.services import api_key_create, api_key_update
from billing.models import UsageRecord
from dosportal.testing.gateway import wait_for
from dosportal.testing.html import sign_in_over_http, text_of

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = {"model": "dos-ai", "max_tokens": 6, "messages": [{"role": "user", "content": "Hello, world!!"}]}
LEASE_SECONDS = 3  # the concurrency slots' lease in this test's gateway
RATE_HEADER = "x-ratelimit-remaining-requests"


def raw_call(client: openai.OpenAI, **extra: object) -> httpx.Response:
    """One chat call through the SDK; its HTTP response, whatever the status."""
    try:
        return client.chat.completions.with_raw_response.create(**CHAT, **extra).http_response
    except openai.APIStatusError as error:
        return error.response


def burst(client: openai.OpenAI, count: int) -> list[int]:
    start = threading.Barrier(count)

    def call(_: int) -> int:
        start.wait()
        return raw_call(client).status_code

    with ThreadPoolExecutor(max_workers=count) as pool:
        return sorted(pool.map(call, range(count)))


def inflight(server, key: ApiKey) -> int:
    return server.zcard(f"dosportal:rl:{{{key.pk}}}:inflight")


def test_a_killed_primary_fails_open_for_the_switch_then_limits_are_exact_again(
    redis_failover, gateway_factory, api_key, api_user, fake_upstream
):
    gateway = gateway_factory(
        REDIS_URL="",
        REDIS_SENTINELS=redis_failover.sentinels,
        REDIS_SENTINEL_MASTER="dosportal",
        DOS_AI_CONCURRENCY_LEASE_SECONDS=str(LEASE_SECONDS),
    )
    account_set_limits(user=api_user, requests_per_minute=10, tokens_per_minute=1_000_000)
    first = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=api_key, max_retries=0)
    after_key, after_raw = api_key_create(owner=api_user, name="after the switch")
    after = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=after_raw, max_retries=0)
    capped_key, capped_raw = api_key_create(owner=api_user, name="capped")
    api_key_update(api_key=capped_key, max_concurrency=1)
    capped = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=capped_raw, max_retries=0)

    # Before: exact, through the primary the sentinels name.
    before = burst(first, 15)
    assert before == [200] * 10 + [429] * 5
    # A stream holds the capped key's one slot while the primary dies.
    fake_upstream.chunk_delay = 0.4
    stream = capped.chat.completions.create(**CHAT, stream=True)
    next(iter(stream))
    assert redis_failover.replicated() == 1  # the windows and the slot are on the replica too
    redis_failover.kill_primary()

    # During: the first key is at its limit, so every 200 here is a call the limiter let through,
    # and the first 429 is the limiter answering again.
    during: list[httpx.Response] = []
    while not during or during[-1].status_code != 429:
        during.append(raw_call(first))
        assert len(during) < 5000, "the limiter never came back"
    new_primary = redis_failover.wait_for_new_primary()
    for _ in stream:  # the stream ends normally across the switch
        pass
    fake_upstream.chunk_delay = 0.0

    let_through = [response for response in during if response.status_code == 200]
    statuses = {response.status_code for response in during}
    assert statuses <= {200, 429}, statuses
    assert let_through, "no call fell in the switch: the test did not test it"
    # A call admitted while Redis was away carries the window's headers only if the limiter was
    # back by the time it answered (gateway.rate_limit_headers peeks then): remaining 0.
    assert all(response.headers.get(RATE_HEADER, "0") == "0" for response in let_through)
    # The limiter is back, and the window kept its 10 calls (replicated before the primary died).
    assert during[-1].headers[RATE_HEADER] == "0"
    assert during[-1].json()["error"]["code"] == "rate_limit_exceeded"
    print(f"\nfail-open during the failover: {len(let_through)} calls let through past the limit")

    # After: exact again, on the new primary.
    assert burst(after, 15) == [200] * 10 + [429] * 5
    assert [raw_call(first).status_code for _ in range(3)] == [429] * 3
    # No slot stuck: released, or expired with its lease if the release fell in the switch.
    wait_for(lambda: inflight(new_primary, capped_key) == 0 or None, timeout=LEASE_SECONDS + 5, what="a free slot")
    assert raw_call(capped).status_code == 200
    assert inflight(new_primary, capped_key) == 0
    # Every admitted call was charged once, fail-open ones included.
    assert UsageRecord.objects.filter(api_key__name="test key", status_code=200).count() == 10 + len(let_through)
    assert UsageRecord.objects.filter(api_key=after_key).count() == 10
    # The failed-key guard counts on the new primary too.
    wrong = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="not-a-key", max_retries=0)
    assert raw_call(wrong).status_code == 401
    assert new_primary.get("dosportal:authfail:127.0.0.1") == "1"
    # The cache (django-ratelimit's sign-in throttle, allauth) is on the new primary too.
    with httpx.Client(base_url=gateway.url, timeout=30) as browser:
        form, refused = sign_in_over_http(browser, api_user.email, "not the password")
    assert (form.status_code, refused.status_code) == (200, 200)
    assert "The email address and/or password you specified are not correct." in text_of(refused.text)
    assert new_primary.keys("dosportal:1:rl:*"), new_primary.keys("*")  # KEY_PREFIX:version:key
    assert "Traceback" not in gateway.logs()


def test_over_tls_limits_and_the_cache_use_the_ca_file_and_without_it_fail_open(
    tls_redis, gateway_factory, api_key, api_user, fake_upstream
):
    gateway = gateway_factory(REDIS_URL=tls_redis.url, REDIS_CA_FILE=str(tls_redis.ca_file))
    account_set_limits(user=api_user, requests_per_minute=3, tokens_per_minute=1_000_000)
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=api_key, max_retries=0)

    limited = [raw_call(client) for _ in range(4)]
    with httpx.Client(base_url=gateway.url, timeout=30) as browser:
        sign_in_over_http(browser, api_user.email, "not the password")
    # The system's CAs do not know the test's: the certificate is refused, and the limiter fails open.
    unverified = gateway_factory(REDIS_URL=tls_redis.url)
    unlimited = [raw_call(openai.OpenAI(base_url=f"{unverified.url}/v1", api_key=api_key, max_retries=0))
                 for _ in range(2)]  # fmt: skip

    assert [response.status_code for response in limited] == [200, 200, 200, 429]
    assert [response.headers[RATE_HEADER] for response in limited] == ["2", "1", "0", "0"]
    assert tls_redis.client().keys("dosportal:1:rl:*")  # the sign-in throttle's counter
    assert [response.status_code for response in unlimited] == [200, 200]
    assert all(RATE_HEADER not in response.headers for response in unlimited)
    assert "certificate verify failed" in unverified.logs()
