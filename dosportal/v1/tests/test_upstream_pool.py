"""Several upstreams per model: the least busy healthy one, failover before the first byte only,
health by failures in a row, and what /healthz and the admin say about it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from accounts.models import User
from apikeys.services import api_key_create
from billing.models import ServedModel, UpstreamEndpoint, UsageRecord
from dosportal.testing.gateway import free_port
from dosportal.testing.upstream import REPLY_WORDS, FakeUpstream, serving
from dosportal.v1 import pool

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def farm() -> Iterator[list[FakeUpstream]]:
    """Two more fake upstreams on 127.0.0.1, each in its own thread."""
    with serving(FakeUpstream()) as first, serving(FakeUpstream()) as second:
        yield [first, second]


def down_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there


def pooled(gateway_factory, urls: list[str], **env: str):
    return gateway_factory(
        DOS_AI_UPSTREAM_URL=",".join(urls),
        DOS_AI_UPSTREAM_FAILURE_THRESHOLD="2",
        DOS_AI_UPSTREAM_CATALOGUE_SECONDS="0",
        **env,
    )


def sdk(gateway, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=api_key, max_retries=0)


def chat(client: openai.OpenAI) -> str:
    response = client.chat.completions.create(model="dos-ai", messages=[{"role": "user", "content": "Hi"}])
    return response.choices[0].message.content


def posts(server: FakeUpstream) -> int:
    return sum(1 for request in server.requests if request["path"].endswith("/chat/completions"))


@pytest.mark.parametrize("broken", ["down", "error500", "hangs"])
def test_the_sdk_sees_only_successes_while_one_endpoint_is_healthy(gateway_factory, api_key, farm, broken):
    healthy, bad = farm
    if broken == "error500":
        bad.mode = "error500"
    if broken == "hangs":
        bad.response_delay = 3.0
    bad_url = down_url() if broken == "down" else bad.url
    gateway = pooled(
        gateway_factory, [bad_url, healthy.url], DOS_AI_UPSTREAM_TIMEOUT="0.5", DOS_AI_UPSTREAM_DEADLINE="10"
    )
    client = sdk(gateway, api_key)

    answers = [chat(client) for _ in range(8)]

    assert answers == ["".join(REPLY_WORDS)] * 8
    records = list(UsageRecord.objects.order_by("id"))
    assert [r.status_code for r in records] == [200] * 8  # each call settled once, for the answer delivered
    assert all(r.cost_micros > 0 for r in records)
    assert posts(healthy) == 8
    if broken != "down":
        assert posts(bad) == 2  # tried until the threshold, then skipped for its cooldown


def test_endpoints_set_in_the_admin_serve_their_model_instead_of_the_shared_url(
    gateway_factory, api_key, farm, fake_upstream, served_models
):
    first, second = farm
    second.mode = "error500"
    model = served_models["dos-ai"]
    UpstreamEndpoint.objects.create(served_model=model, base_url=second.url, weight=1)
    UpstreamEndpoint.objects.create(served_model=model, base_url=first.url, weight=3)
    gateway = pooled(gateway_factory, [fake_upstream.url])
    client = sdk(gateway, api_key)

    answers = [chat(client) for _ in range(5)]

    assert answers == ["".join(REPLY_WORDS)] * 5
    assert posts(fake_upstream) == 0
    assert posts(first) == 5
    assert posts(second) <= 2


def test_a_stream_is_never_retried_after_its_first_byte(gateway_factory, api_key, farm, served_models):
    first, second = farm
    first.mode = "cut"  # two chunks, then the connection ends
    model = served_models["dos-ai"]
    UpstreamEndpoint.objects.create(served_model=model, base_url=first.url, weight=1000)
    UpstreamEndpoint.objects.create(served_model=model, base_url=second.url, weight=1)
    gateway = pooled(gateway_factory, [second.url], DOS_AI_HOST_LABEL="stream")

    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json={"model": "dos-ai", "stream": True, "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Authorization": f"Bearer {api_key}"},
    ) as response:
        body = response.read().decode()

    assert '"content":"Hello"' in body.replace(" ", "")
    assert body.rstrip().endswith('"code":"upstream_unavailable"}}')
    assert "[DONE]" not in body
    assert posts(second) == 0  # the spliced answer a retry would give never happens
    record = UsageRecord.objects.get()
    assert (record.status_code, record.streamed) == (502, True)


def test_healthz_says_degraded_then_unavailable(gateway_factory, api_key, farm, served_models):
    first, second = farm
    first.mode = "error500"
    model = served_models["dos-ai"]
    UpstreamEndpoint.objects.create(served_model=model, base_url=first.url)
    UpstreamEndpoint.objects.create(served_model=model, base_url=second.url)
    gateway = pooled(gateway_factory, [second.url], DOS_AI_HOST_LABEL="health")
    client = sdk(gateway, api_key)
    for _ in range(4):
        chat(client)
    time.sleep(1.1)  # published in the background; /healthz reads them at most once a second

    degraded = httpx.get(f"{gateway.url}/healthz")
    second.mode = "error500"
    # Error answers count against an endpoint when more than one account sees them (dosportal.v1.pool).
    other = api_key_create(owner=User.objects.create_user("other@example.com", "x-password-123456"), name="k")[1]
    for each in (client, sdk(gateway, other), client):
        with pytest.raises(openai.APIStatusError):
            chat(each)
    time.sleep(1.1)
    unavailable = httpx.get(f"{gateway.url}/healthz")

    assert degraded.status_code == 200
    assert degraded.json() == {
        "status": "degraded",
        "database": "ok",
        "upstreams": {"dos-ai": {"configured": 2, "healthy": 1}},
    }
    assert unavailable.status_code == 503
    assert unavailable.json()["status"] == "unavailable"
    assert unavailable.json()["upstreams"]["dos-ai"] == {"configured": 2, "healthy": 0}


def test_choice_is_the_least_busy_per_weight_and_skips_endpoints_cooling_down(settings):
    settings.DOS_AI_UPSTREAM_FAILURE_THRESHOLD = 2
    light = pool.Endpoint(pool.EndpointConfig("http://a/v1", weight=1))
    heavy = pool.Endpoint(pool.EndpointConfig("http://b/v1", weight=3))
    endpoints = [light, heavy]

    light.in_flight, heavy.in_flight = 1, 2
    assert pool.choose(endpoints, []) is heavy  # (2 + 1) / 3 < (1 + 1) / 1
    heavy.in_flight = 6
    assert pool.choose(endpoints, []) is light  # (6 + 1) / 3 > (1 + 1) / 1
    assert pool.choose(endpoints, [light]) is heavy

    light.failed()
    light.failed()
    assert light.state() == "cooling down"
    assert pool.choose(endpoints, []) is heavy
    light.down_until = time.monotonic() - 1  # the cooldown is over: one trial request
    assert pool.choose([light], []) is light
    assert pool.choose([light], []) is None  # only one trial at a time
    light.failed()
    assert light.cooldown == 2 * pool.FIRST_COOLDOWN
    light.succeeded()
    assert (light.state(), light.failures, light.cooldown) == ("healthy", 0, 0.0)


def test_the_admin_shows_each_endpoints_state(admin_client, served_models):
    model = served_models["dos-ai"]
    UpstreamEndpoint.objects.create(served_model=model, base_url="http://vllm-1:8000/v1")

    page = admin_client.get(f"/admin/billing/servedmodel/{model.pk}/change/")

    assert page.status_code == 200
    assert "http://vllm-1:8000/v1" in page.content.decode()
    assert "healthy (no failure reported)" in page.content.decode()
    assert ServedModel.objects.get(pk=model.pk).endpoints.count() == 1
