"""A key's own settings through /v1, with the official OpenAI SDK against live gateways:
expiry, allowed client addresses, the model allowlist, the concurrency cap, the spend limit,
rolling with a grace period, and the documented order of the checks.

Every refusal is checked for its exact status, type and code, and for writing nothing: no
usage record, no hold, no ledger entry, no entry in the key's rate-limit window and no slot
under its concurrency cap.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import io
import threading
import time

import httpx
import openai
import pytest
import redis
from django.conf import settings
from django.core.management import call_command
from django.db.models import Sum

from accounts.services import account_set_limits
from apikeys.models import ApiKey
from apikeys.services import api_key_roll, api_key_update
from billing.models import CreditAccount, CreditHold, LedgerEntry, UsageRecord
from billing.money import exact_places, format_usd
from dosportal.testing.costs import hold_micros

pytestmark = pytest.mark.django_db(transaction=True)

# As in test_billing_gateway: 11 prompt tokens and 6 completion tokens, charged 15 micro-USD; what
# is held (and checked against a key's limit) is the request's worst case, EXACT_HOLD.
EXACT = {"model": "dos-ai", "max_tokens": 6, "messages": [{"role": "user", "content": "Hello, world!!"}]}
EXACT_COST = 15
EXACT_HOLD = hold_micros(EXACT)


def usd(micros: int) -> str:
    return format_usd(micros, exact_places(micros))


def client(gateway, raw_key: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=raw_key, max_retries=0, default_headers=headers)


def chat(gateway, raw_key: str, **headers: str):
    return client(gateway, raw_key, **headers).chat.completions.create(**EXACT)


def refused(gateway, raw_key: str, error_class: type[openai.APIStatusError], **headers: str) -> openai.APIStatusError:
    with pytest.raises(error_class) as raised:
        chat(gateway, raw_key, **headers)
    return raised.value


def error_of(error: openai.APIStatusError) -> tuple[int, str, str]:
    body = error.response.json()["error"]
    return error.status_code, body["type"], body["code"]


def the_key(user) -> ApiKey:
    return ApiKey.objects.get(owner=user, name="test key")


def limiter_entries(key_id: int) -> tuple[int, int]:
    """(entries in the key's rate-limit window, slots in flight) in the test Redis."""
    store = redis.Redis.from_url(settings.REDIS_URL)
    base = f"dosportal:rl:{{{key_id}}}"
    return store.zcard(f"{base}:req"), store.zcard(f"{base}:inflight")


def assert_nothing_written(user) -> None:
    key = the_key(user)
    assert UsageRecord.objects.count() == 0
    assert CreditHold.objects.count() == 0
    assert LedgerEntry.objects.filter(user=user, kind="usage").count() == 0
    assert CreditAccount.objects.get(user=user).held_micros == 0
    assert (key.spend_held_micros, key.spend_spent_micros) == (0, 0)
    assert limiter_entries(key.pk) == (0, 0)


# --- expiry --------------------------------------------------------------------------------


def test_an_expired_key_gets_401_expired_api_key_saying_when(gateway, api_key, api_user, fake_upstream):
    api_key_update(api_key=the_key(api_user), expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    assert chat(gateway, api_key).usage.total_tokens == 17  # not expired yet
    expired_at = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    ApiKey.objects.filter(owner=api_user).update(expires_at=expired_at)

    error = refused(gateway, api_key, openai.AuthenticationError)

    assert error_of(error) == (401, "authentication_error", "expired_api_key")
    assert error.response.json()["error"]["message"] == "This API key expired at 2026-01-02 03:04:05 UTC."
    assert "x-ratelimit-limit-requests" not in error.response.headers
    assert UsageRecord.objects.count() == 1
    assert CreditHold.objects.count() == 0
    assert limiter_entries(the_key(api_user).pk) == (1, 0)


# --- allowed client addresses ----------------------------------------------------------------


def test_a_client_outside_the_allowed_ranges_gets_403_ip_not_allowed(gateway, api_key, api_user, fake_upstream):
    api_key_update(api_key=the_key(api_user), allowed_ips=["10.0.0.0/8", "2001:db8::/32"])

    error = refused(gateway, api_key, openai.PermissionDeniedError)

    assert error_of(error) == (403, "permission_error", "ip_not_allowed")
    assert error.response.json()["error"]["message"] == "This API key may not be used from the address 127.0.0.1."
    assert_nothing_written(api_user)
    api_key_update(api_key=the_key(api_user), allowed_ips=["10.0.0.0/8", "127.0.0.0/30"])
    assert chat(gateway, api_key).usage.total_tokens == 17


def test_x_forwarded_for_decides_only_behind_a_trusted_proxy(gateway_factory, api_key, api_user, fake_upstream):
    behind_proxy = gateway_factory(DOS_AI_TRUSTED_PROXIES="127.0.0.1/32")
    # uvicorn itself believes X-Forwarded-For from 127.0.0.1 unless told otherwise (FORWARDED_ALLOW_IPS).
    direct = gateway_factory(FORWARDED_ALLOW_IPS="192.0.2.1")
    api_key_update(api_key=the_key(api_user), allowed_ips=["2001:db8::/32"])

    assert chat(behind_proxy, api_key, **{"X-Forwarded-For": "2001:db8::5"}).usage.total_tokens == 17
    for gateway, forwarded in [(behind_proxy, "203.0.113.9"), (direct, "2001:db8::5")]:
        error = refused(gateway, api_key, openai.PermissionDeniedError, **{"X-Forwarded-For": forwarded})
        assert error_of(error) == (403, "permission_error", "ip_not_allowed")
    assert UsageRecord.objects.count() == 1


# --- the model allowlist ---------------------------------------------------------------------


def test_a_model_outside_the_allowlist_is_403_and_an_unknown_one_still_404(gateway, api_key, api_user, fake_upstream):
    api_key_update(api_key=the_key(api_user), allowed_models=["dos-ai-embed"])
    sdk = client(gateway, api_key)

    error = refused(gateway, api_key, openai.PermissionDeniedError)
    with pytest.raises(openai.NotFoundError) as unknown:
        sdk.chat.completions.create(**{**EXACT, "model": "no-such-model"})
    with pytest.raises(openai.PermissionDeniedError) as retrieved:
        sdk.models.retrieve("dos-ai")
    listed = [model.id for model in sdk.models.list()]

    assert error_of(error) == (403, "permission_error", "model_not_allowed")
    assert error.response.json()["error"]["message"] == "This API key may not use the model 'dos-ai'."
    assert error_of(unknown.value) == (404, "invalid_request_error", "model_not_found")
    assert error_of(retrieved.value) == (403, "permission_error", "model_not_allowed")
    assert listed == ["dos-ai-embed"]
    assert sdk.embeddings.create(model="dos-ai-embed", input="hello").data
    assert list(UsageRecord.objects.values_list("model", flat=True)) == ["dos-ai-embed"]


def test_all_models_is_explicit_and_an_empty_allowlist_allows_nothing(gateway, api_key, api_user, fake_upstream):
    ApiKey.objects.filter(owner=api_user).update(allowed_models=[])  # only possible behind the services' back

    error = refused(gateway, api_key, openai.PermissionDeniedError)
    listed = [model.id for model in client(gateway, api_key).models.list()]

    assert error_of(error) == (403, "permission_error", "model_not_allowed")
    assert listed == []
    api_key_update(api_key=the_key(api_user), allowed_models=None)
    assert [model.id for model in client(gateway, api_key).models.list()] == ["dos-ai", "dos-ai-embed"]


# --- the concurrency cap -----------------------------------------------------------------------


def _in_background(function, count: int) -> list[concurrent.futures.Future]:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=count)
    futures = [pool.submit(function) for _ in range(count)]
    pool.shutdown(wait=False)
    return futures


def _outcome(function) -> tuple[int, str]:
    try:
        function()
    except openai.APIStatusError as error:
        status, _type, code = error_of(error)
        return status, code
    return 200, ""


def test_the_cap_holds_across_two_processes_and_frees_when_calls_end(gateway_factory, api_key, api_user, fake_upstream):
    gateway = gateway_factory(workers=2)
    api_key_update(api_key=the_key(api_user), max_concurrency=3)
    fake_upstream.response_delay = 1.5

    outcomes = [future.result() for future in _in_background(lambda: _outcome(lambda: chat(gateway, api_key)), 12)]

    assert sorted(outcomes) == [(200, "")] * 3 + [(429, "concurrency_limit_exceeded")] * 9
    assert UsageRecord.objects.count() == 3
    assert limiter_entries(the_key(api_user).pk) == (3, 0)  # refused calls took no rate-limit entry
    fake_upstream.response_delay = 0
    assert chat(gateway, api_key).usage.total_tokens == 17


def test_over_the_cap_is_429_with_retry_after_1_and_a_stream_holds_its_slot_to_the_end(
    gateway, api_key, api_user, fake_upstream
):
    api_key_update(api_key=the_key(api_user), max_concurrency=1)
    fake_upstream.chunk_delay = 0.3
    stream = client(gateway, api_key).chat.completions.create(**EXACT, stream=True)
    first = next(iter(stream))

    with pytest.raises(openai.RateLimitError) as raised:
        chat(gateway, api_key)
    chunks = [first, *stream]

    assert error_of(raised.value) == (429, "rate_limit_error", "concurrency_limit_exceeded")
    assert raised.value.response.headers["retry-after"] == "1"
    assert raised.value.response.json()["error"]["message"] == (
        "This API key already has 1 request in flight, its limit. Retry when one finishes."
    )
    assert len(chunks) > 2
    assert UsageRecord.objects.count() == 1
    fake_upstream.chunk_delay = 0
    assert chat(gateway, api_key).usage.total_tokens == 17
    assert limiter_entries(the_key(api_user).pk) == (2, 0)


def test_a_killed_workers_slots_expire_with_their_lease(gateway_factory, api_key, api_user, fake_upstream):
    doomed = gateway_factory(DOS_AI_CONCURRENCY_LEASE_SECONDS="2", DOS_AI_TEST_ROLE="doomed")
    survivor = gateway_factory(DOS_AI_CONCURRENCY_LEASE_SECONDS="2")
    api_key_update(api_key=the_key(api_user), max_concurrency=1)
    fake_upstream.response_delay = 30
    in_flight = _in_background(lambda: _outcome(lambda: chat(doomed, api_key)), 1)
    deadline = time.monotonic() + 10
    while not fake_upstream.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake_upstream.requests

    doomed.process.kill()  # SIGKILL: nothing runs in the worker after this
    doomed.process.wait()
    fake_upstream.response_delay = 0
    blocked = _outcome(lambda: chat(survivor, api_key))
    time.sleep(2.2)
    admitted = _outcome(lambda: chat(survivor, api_key))

    assert blocked == (429, "concurrency_limit_exceeded")
    assert admitted == (200, "")
    with pytest.raises(openai.APIConnectionError):
        in_flight[0].result()  # the call the killed worker had in flight


# --- the spend limit -------------------------------------------------------------------------


def test_fifty_concurrent_calls_on_two_processes_never_pass_the_spend_limit(
    gateway_factory, api_key, api_user, fake_upstream
):
    gateway = gateway_factory(workers=2)
    account_set_limits(user=api_user, requests_per_minute=1000, tokens_per_minute=1_000_000)
    limit = 10 * EXACT_HOLD
    api_key_update(api_key=the_key(api_user), spend_limit_micros=limit, spend_period="month")
    start = threading.Barrier(50)

    def call() -> tuple[int, str]:
        start.wait()
        return _outcome(lambda: chat(gateway, api_key))

    outcomes = [future.result() for future in _in_background(call, 50)]

    # Ten holds fit under the limit at once; each call that settles (for less than it held) makes
    # room again, until what was spent leaves no room for one more hold.
    served = outcomes.count((200, ""))
    assert served >= 10
    assert sorted(outcomes) == [(200, "")] * served + [(402, "key_spend_limit_exceeded")] * (50 - served)
    key = the_key(api_user)
    spent = UsageRecord.objects.filter(api_key=key).aggregate(total=Sum("cost_micros"))["total"]
    assert (spent, key.spend_spent_micros, key.spend_held_micros) == (served * 15, served * 15, 0)
    assert spent <= limit
    assert UsageRecord.objects.count() == served
    assert limiter_entries(key.pk)[0] == served  # the refused gave their rate-limit entries back
    out = io.StringIO()
    call_command("balance", api_user.email, stdout=out)
    account = CreditAccount.objects.get(user=api_user)
    ledger = LedgerEntry.objects.filter(user=api_user).aggregate(total=Sum("amount_micros"))["total"]
    assert account.balance_micros == ledger == 5_000_000 - spent
    assert f"{(5_000_000 - spent) / 1e6:.6f}" in out.getvalue()


def test_over_the_spend_limit_is_402_saying_when_it_resets_and_writes_nothing(
    gateway, api_key, api_user, fake_upstream
):
    api_key_update(api_key=the_key(api_user), spend_limit_micros=EXACT_HOLD - 1, spend_period="day")
    today = dt.datetime.now(dt.UTC).date()
    resets = (dt.datetime.combine(today, dt.time(), tzinfo=dt.UTC) + dt.timedelta(days=1)).strftime("%Y-%m-%d")

    error = refused(gateway, api_key, openai.APIStatusError)

    # A limit that cannot cover this request's worst case says so, with what is left of it.
    assert error_of(error) == (402, "billing_error", "key_spend_limit_exceeded")
    assert error.response.json()["error"]["message"] == (
        f"This request may cost up to {usd(EXACT_HOLD)}; {usd(EXACT_HOLD - 1)} of this API key's daily spend "
        f"limit of {usd(EXACT_HOLD - 1)} is left (it resets at {resets} 00:00:00 UTC). Lower max_tokens "
        "(or shorten the prompt), or raise the key's limit."
    )
    assert_nothing_written(api_user)
    api_key_update(api_key=the_key(api_user), spend_limit_micros=EXACT_HOLD, spend_period="total")
    assert chat(gateway, api_key).usage.total_tokens == 17
    error = refused(gateway, api_key, openai.APIStatusError)
    assert error.response.json()["error"]["message"] == (
        f"This request may cost up to {usd(EXACT_HOLD)}; {usd(EXACT_HOLD - EXACT_COST)} of this API key's total "
        f"spend limit of {usd(EXACT_HOLD)} is left (it does not reset). Lower max_tokens (or shorten the prompt), "
        "or raise the key's limit."
    )
    ApiKey.objects.filter(owner=api_user).update(spend_spent_micros=EXACT_HOLD)  # all of it spent
    error = refused(gateway, api_key, openai.APIStatusError)
    assert error.response.json()["error"]["message"] == (
        f"This API key has reached its total spend limit of {usd(EXACT_HOLD)}; it does not reset."
    )


# --- rolling -------------------------------------------------------------------------------


def test_a_rolled_key_keeps_its_id_and_spend_and_the_old_secret_works_until_the_grace_ends(
    gateway, api_key, api_user, fake_upstream
):
    # Room for three calls: after two, the third's hold still fits; after three, a fourth's does not.
    api_key_update(api_key=the_key(api_user), spend_limit_micros=2 * EXACT_COST + EXACT_HOLD, spend_period="week")
    chat(gateway, api_key)
    key, new_key = api_key_roll(api_key=the_key(api_user), grace=dt.timedelta(hours=1))

    chat(gateway, api_key)  # the old secret, within its grace period
    chat(gateway, new_key)
    error = refused(gateway, new_key, openai.APIStatusError)  # the same spend window: 3 calls, then the limit
    ApiKey.objects.filter(pk=key.pk).update(previous_key_expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    old = refused(gateway, api_key, openai.AuthenticationError)

    assert error_of(error) == (402, "billing_error", "key_spend_limit_exceeded")
    assert error_of(old) == (401, "authentication_error", "invalid_api_key")
    assert set(UsageRecord.objects.values_list("api_key_id", flat=True)) == {key.pk}
    assert ApiKey.objects.get(pk=key.pk).spend_spent_micros == 3 * EXACT_COST


def test_rolling_without_grace_ends_the_old_secret_at_once(gateway, api_key, api_user, fake_upstream):
    _, new_key = api_key_roll(api_key=the_key(api_user))

    old = refused(gateway, api_key, openai.AuthenticationError)

    assert error_of(old) == (401, "authentication_error", "invalid_api_key")
    assert chat(gateway, new_key).usage.total_tokens == 17


# --- the order of the checks -------------------------------------------------------------------


def _raw(gateway, raw_key: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {raw_key}", "Content-Type": "application/json", **headers},
        timeout=30,
    )


def test_the_checks_come_in_the_documented_order(gateway, api_key, api_user, fake_upstream):
    key = the_key(api_user)
    account_set_limits(user=api_user, requests_per_minute=1, tokens_per_minute=100_000)
    api_key_update(
        api_key=key,
        allowed_ips=["10.0.0.0/8"],
        allowed_models=["dos-ai-embed"],
        spend_limit_micros=2 * EXACT_HOLD,  # one call's worst case fits (its body has spaces: a few bytes more)
        spend_period="day",
    )
    bad_json = b"{not json"
    unknown_model = b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}'
    disallowed = b'{"model": "dos-ai", "max_tokens": 6, "messages": [{"role": "user", "content": "Hello, world!!"}]}'

    def code(body: bytes) -> tuple[int, str]:
        response = _raw(gateway, api_key, body)
        return response.status_code, response.json()["error"]["code"]

    ApiKey.objects.filter(pk=key.pk).update(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    assert code(bad_json) == (401, "expired_api_key")  # key before address
    ApiKey.objects.filter(pk=key.pk).update(expires_at=None)
    assert code(bad_json) == (403, "ip_not_allowed")  # address before body
    ApiKey.objects.filter(pk=key.pk).update(allowed_ips=None)
    assert code(bad_json) == (400, "invalid_json")  # body before model
    assert code(unknown_model) == (404, "model_not_found")  # unknown before not allowed
    assert code(disallowed) == (403, "model_not_allowed")  # model before limits
    ApiKey.objects.filter(pk=key.pk).update(allowed_models=None)
    assert _raw(gateway, api_key, disallowed).status_code == 200
    assert code(disallowed) == (429, "rate_limit_exceeded")  # limits before the spend limit
    assert UsageRecord.objects.count() == 1


def test_a_limit_spent_in_a_past_period_admits_again_in_the_current_one(gateway, api_key, api_user, fake_upstream):
    api_key_update(api_key=the_key(api_user), spend_limit_micros=EXACT_HOLD, spend_period="day")
    yesterday = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=1)
    ApiKey.objects.filter(owner=api_user).update(spend_period_start=yesterday, spend_spent_micros=EXACT_HOLD)

    assert chat(gateway, api_key).usage.total_tokens == 17  # yesterday's spend does not count today
    error = refused(gateway, api_key, openai.APIStatusError)  # today's does

    assert error_of(error) == (402, "billing_error", "key_spend_limit_exceeded")
    key = the_key(api_user)
    assert (key.spend_period_start, key.spend_spent_micros) == (yesterday + dt.timedelta(days=1), EXACT_COST)
