"""The per-address guard against wrong keys, over real HTTP: it blocks guesses from one address
(IPv6 counted per /64) without locking out the valid keys of others behind the same address."""

from __future__ import annotations

import httpx
import openai
import pytest

from apikeys.keys import generate_key
from apikeys.models import ApiKey
from apikeys.services import api_key_create, api_key_revoke

pytestmark = pytest.mark.django_db(transaction=True)

TOO_MANY = "Too many requests with an invalid API key from this address. Retry after {}s."


@pytest.fixture
def proxied_gateway(gateway_factory, transactional_db, fake_upstream):  # fake_upstream: reset to answer
    # Behind a trusted proxy the client is the X-Forwarded-For address: many clients from one test.
    # The same settings as test_key_controls' proxy test: one server process for both.
    return gateway_factory(DOS_AI_TRUSTED_PROXIES="127.0.0.1/32")


def models(gateway, key: str, client: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "X-Forwarded-For": client}
    return httpx.get(f"{gateway.url}/v1/models", headers=headers, timeout=10)


def sdk(gateway, key: str, client: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, default_headers={"X-Forwarded-For": client}
    )


def test_a_valid_key_is_served_from_an_address_an_old_revoked_key_got_blocked(
    proxied_gateway, api_key, api_user, served_models
):
    # Two accounts behind one office NAT: a forgotten deployment retries with a revoked key.
    colleague = api_user
    old = ApiKey.objects.get(owner=colleague)
    api_key_revoke(api_key=old)
    valid = api_key_create(owner=colleague, name="current")[1]
    office = "198.51.100.31"

    retries = [models(proxied_gateway, api_key, office) for _ in range(32)]
    client = sdk(proxied_gateway, valid, office)
    answers = [
        client.chat.completions.create(model="dos-ai", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
        for _ in range(3)
    ]
    listed = client.models.list()

    # DOS_AI_AUTH_FAILURES_PER_MINUTE is 30: the 31st failure blocks the address.
    assert [response.status_code for response in retries] == [401] * 30 + [429] * 2
    assert retries[-1].json()["error"]["message"] == TOO_MANY.format(retries[-1].headers["retry-after"])
    assert [answer.choices[0].message.content for answer in answers] == ["Hello from the fake upstream."] * 3
    assert [model.id for model in listed.data] == sorted(served_models)
    # The block still answers everything that is not a known-good key, and costs nothing more.
    assert models(proxied_gateway, api_key, office).status_code == 429
    assert models(proxied_gateway, generate_key(), office).status_code == 429
    assert models(proxied_gateway, "dos_sk_" + "A" * 32, office).status_code == 429  # wrong checksum
    assert models(proxied_gateway, api_key, "198.51.100.32").status_code == 401  # the neighbour is not blocked


def test_wrong_keys_from_one_ipv6_64_are_counted_together(proxied_gateway, api_key):
    wrong = "dos_sk_" + "B" * 32

    guesses = [models(proxied_gateway, wrong, f"2001:db8:7:64::{index:x}") for index in range(1, 33)]
    other_network = models(proxied_gateway, wrong, "2001:db8:7:65::1")
    valid_from_blocked = models(proxied_gateway, api_key, "2001:db8:7:64::ffff")

    assert [response.status_code for response in guesses] == [401] * 30 + [429] * 2
    assert guesses[-1].json() == {
        "error": {
            "message": TOO_MANY.format(guesses[-1].headers["retry-after"]),
            "type": "rate_limit_error",
            "code": "rate_limit_exceeded",
        }
    }
    assert other_network.status_code == 401
    assert valid_from_blocked.status_code == 200


def test_ipv4_addresses_are_counted_one_by_one(proxied_gateway):
    wrong = "dos_sk_" + "C" * 32

    statuses = [models(proxied_gateway, wrong, f"192.0.2.{index}").status_code for index in range(1, 41)]

    assert statuses == [401] * 40
