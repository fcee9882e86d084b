"""One tenant must not take the upstream away from the others: what counts against an
endpoint's health (dosportal.v1.pool), over real HTTP with one endpoint and with several."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from accounts.models import User
from apikeys.services import api_key_create
from billing.models import UpstreamEndpoint
from dosportal.testing.gateway import free_port
from dosportal.testing.upstream import REPLY_WORDS, FakeUpstream, serving

pytestmark = pytest.mark.django_db(transaction=True)

REPLY = "".join(REPLY_WORDS)
POISON = "CRASH-THE-SERVER"


@pytest.fixture
def servers() -> Iterator[list[FakeUpstream]]:
    with serving(FakeUpstream()) as first, serving(FakeUpstream()) as second:
        yield [first, second]


def account_key(email: str) -> str:
    return api_key_create(owner=User.objects.create_user(email, "x-password-123456"), name="k")[1]


@pytest.fixture
def gateway(gateway_factory, fake_upstream, transactional_db):
    """One server for the whole file: each test gives the model endpoints of its own
    (`serve_from`), read afresh on every call, so no test inherits another's health."""
    return gateway_factory(
        DOS_AI_UPSTREAM_URL=fake_upstream.url,
        DOS_AI_UPSTREAM_FAILURE_THRESHOLD="2",
        DOS_AI_UPSTREAM_CATALOGUE_SECONDS="0",
        DOS_AI_UPSTREAM_TIMEOUT="0.5",
        DOS_AI_HOST_LABEL="tenants",
    )


def serve_from(served_models, urls: list[str]) -> None:
    for url in urls:
        UpstreamEndpoint.objects.create(served_model=served_models["dos-ai"], base_url=url)


def call(gateway, key: str, content: str = "Hi") -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "dos-ai", "max_tokens": 10, "messages": [{"role": "user", "content": content}]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def posts(server: FakeUpstream) -> int:
    return sum(1 for request in server.requests if request["path"].endswith("/chat/completions"))


def healthz(gateway) -> httpx.Response:
    time.sleep(1.1)  # health is published in the background; /healthz reads it at most once a second
    return httpx.get(f"{gateway.url}/healthz", timeout=10)


@pytest.mark.parametrize("endpoints", [1, 2], ids=["one-endpoint", "two-endpoints"])
def test_an_account_whose_requests_crash_the_upstream_does_not_deny_the_others(
    gateway, served_models, servers, endpoints
):
    for server in servers:
        server.poison_marker = POISON
    serve_from(served_models, [server.url for server in servers[:endpoints]])
    poisoner, innocent = account_key("poisoner@example.com"), account_key("innocent@example.com")
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=innocent, max_retries=0)

    poisoned, answers = [], []
    for _ in range(10):  # two crashing calls for each ordinary one, as the attack did
        poisoned += [call(gateway, poisoner, POISON).status_code for _ in range(2)]
        answer = client.chat.completions.create(model="dos-ai", messages=[{"role": "user", "content": "Hi"}])
        answers.append(answer.choices[0].message.content)

    assert poisoned == [502] * 20
    assert answers == [REPLY] * 10
    # Every poisoned call was tried on each endpoint (one retry), every ordinary one once.
    assert sum(posts(server) for server in servers) == 20 * endpoints + 10
    assert healthz(gateway).json()["status"] == "ok"


def test_error_answers_seen_by_two_accounts_take_the_endpoint_out(gateway, served_models, servers):
    broken = servers[0]
    broken.mode = "error500"
    serve_from(served_models, [broken.url])
    first, second = account_key("first@example.com"), account_key("second@example.com")

    alone = [call(gateway, first).status_code for _ in range(4)]
    still_healthy = healthz(gateway)
    together = [call(gateway, key).status_code for key in (second, first)]
    out = healthz(gateway)

    assert alone == [502] * 4
    assert still_healthy.json()["status"] == "ok"  # one account alone cannot tell its requests from the server
    assert together == [502] * 2
    assert out.status_code == 503
    assert out.json()["upstreams"]["dos-ai"] == {"configured": 1, "healthy": 0}
    assert posts(broken) == 6  # taken out, yet still tried: the only endpoint there is


@pytest.mark.parametrize("fault", ["refused", "times_out", "busy"])
def test_an_unreachable_slow_or_busy_endpoint_is_taken_out_whoever_calls(gateway, served_models, servers, fault):
    server = servers[0]
    server.response_delay = 3.0 if fault == "times_out" else 0.0
    server.mode = "busy" if fault == "busy" else "ok"
    url = f"http://127.0.0.1:{free_port()}/v1" if fault == "refused" else server.url
    serve_from(served_models, [url])
    key = account_key("one@example.com")

    statuses = [call(gateway, key).status_code for _ in range(2)]
    out = healthz(gateway)

    assert statuses == [504, 504] if fault == "times_out" else [502, 502]
    assert out.status_code == 503
    assert out.json()["upstreams"]["dos-ai"] == {"configured": 1, "healthy": 0}


def test_when_every_endpoint_is_out_a_call_still_tries_the_least_bad_one(gateway, served_models, servers):
    for server in servers:
        server.mode = "busy"
    serve_from(served_models, [server.url for server in servers])
    key = account_key("one@example.com")
    refused = [call(gateway, key).status_code for _ in range(2)]  # each tries both: both are out
    tries_before = sum(posts(server) for server in servers)

    for server in servers:
        server.mode = "ok"  # back well within the first cooldown (5 s)
    recovered = call(gateway, key)

    assert refused == [502, 502]
    assert tries_before == 4
    assert recovered.status_code == 200
    assert recovered.json()["choices"][0]["message"]["content"] == REPLY
    assert sum(posts(server) for server in servers) == 5
