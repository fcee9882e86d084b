"""The gateway as the official OpenAI SDK sees it, over real HTTP, against a real fake upstream."""

from __future__ import annotations

import re

import httpx
import openai
import pytest

from apikeys.models import ApiKey
from billing.models import ServedModel, UsageRecord
from dosportal.testing.gateway import wait_for
from dosportal.testing.upstream import COMPLETION_TOKENS, PROMPT_TOKENS, REPLY_WORDS

pytestmark = pytest.mark.django_db(transaction=True)


def sdk(gateway, api_key: str, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=api_key, max_retries=0, **kwargs)


def test_models_are_listed_for_the_sdk(gateway, api_key, fake_upstream):
    models = sdk(gateway, api_key).models.list()

    assert [model.id for model in models.data] == ["dos-ai", "dos-ai-embed"]
    assert models.data[0].owned_by == "dos-ai"


def test_one_model_is_described_and_an_unknown_one_is_404(gateway, api_key):
    client = sdk(gateway, api_key)

    assert client.models.retrieve("dos-ai").id == "dos-ai"
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("gpt-17")
    assert raised.value.body == {
        "message": "The model 'gpt-17' does not exist.",
        "type": "invalid_request_error",
        "code": "model_not_found",
    }


def test_chat_completion_is_forwarded_and_answered(gateway, api_key, fake_upstream):
    completion = sdk(gateway, api_key).chat.completions.create(
        model="dos-ai", messages=[{"role": "user", "content": "Hello!"}], max_tokens=50
    )

    assert completion.choices[0].message.content == "".join(REPLY_WORDS)
    assert completion.model == "dos-ai"
    assert completion.usage.prompt_tokens == PROMPT_TOKENS
    assert completion.usage.completion_tokens == COMPLETION_TOKENS
    forwarded = fake_upstream.requests[-1]
    assert forwarded["path"] == "/v1/chat/completions"
    assert forwarded["body"]["messages"] == [{"role": "user", "content": "Hello!"}]
    assert forwarded["body"]["max_tokens"] == 50


def test_the_public_model_name_maps_to_the_upstream_model(gateway, api_key, fake_upstream, served_models):
    ServedModel.objects.filter(name="dos-ai").update(upstream_model="meta-llama/Llama-3.1-8B-Instruct")

    completion = sdk(gateway, api_key).chat.completions.create(
        model="dos-ai", messages=[{"role": "user", "content": "Hi"}]
    )

    assert fake_upstream.requests[-1]["body"]["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert completion.model == "dos-ai"


def test_the_upstream_key_is_sent_and_the_clients_key_is_not(gateway_factory, api_key, fake_upstream, transactional_db):
    gateway = gateway_factory(DOS_AI_UPSTREAM_API_KEY="upstream-secret")

    sdk(gateway, api_key).chat.completions.create(model="dos-ai", messages=[{"role": "user", "content": "Hi"}])

    headers = {name.lower(): value for name, value in fake_upstream.requests[-1]["headers"].items()}
    assert headers["authorization"] == "Bearer upstream-secret"
    assert api_key not in str(fake_upstream.requests[-1])


async def test_async_sdk_chat_completion_works(gateway, api_key, fake_upstream):
    client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=api_key, max_retries=0)

    completion = await client.chat.completions.create(model="dos-ai", messages=[{"role": "user", "content": "Hi"}])

    assert completion.choices[0].message.content == "".join(REPLY_WORDS)
    await client.close()


def test_streaming_delivers_chunks_before_the_upstream_finishes(gateway, api_key, fake_upstream):
    fake_upstream.chunk_delay = 0.3
    stream = sdk(gateway, api_key).chat.completions.create(
        model="dos-ai", messages=[{"role": "user", "content": "Hi"}], stream=True
    )

    arrivals, words = [], []
    for chunk in stream:
        arrivals.append(fake_upstream.stream_finished.is_set())
        if chunk.choices and chunk.choices[0].delta.content:
            words.append(chunk.choices[0].delta.content)

    assert words == REPLY_WORDS
    # The first chunks reached the client while the upstream was still generating.
    assert arrivals[0] is False and arrivals[1] is False
    assert fake_upstream.stream_finished.is_set()
    # The upstream was asked for usage so the stream can be metered.
    assert fake_upstream.requests[-1]["body"]["stream_options"] == {"include_usage": True}


def test_stream_ends_with_done_and_hides_the_usage_chunk_the_client_did_not_ask_for(gateway, api_key, fake_upstream):
    body = {"model": "dos-ai", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    with httpx.stream(
        "POST", f"{gateway.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"}
    ) as response:
        events = [line for line in response.iter_lines() if line]

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert events[-1] == "data: [DONE]"
    assert all('"usage"' not in event for event in events)
    assert len(events) == len(REPLY_WORDS) + 2  # words, the finish chunk, [DONE]


def test_stream_includes_usage_when_the_client_asks(gateway, api_key, fake_upstream):
    stream = sdk(gateway, api_key).chat.completions.create(
        model="dos-ai",
        messages=[{"role": "user", "content": "Hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [chunk.usage for chunk in stream if chunk.usage]

    assert len(usage) == 1
    assert (usage[0].prompt_tokens, usage[0].completion_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)


def test_completions_endpoint_works(gateway, api_key, fake_upstream):
    completion = sdk(gateway, api_key).completions.create(model="dos-ai", prompt="Say hello", max_tokens=5)

    assert completion.choices[0].text == "".join(REPLY_WORDS)
    assert fake_upstream.requests[-1]["path"] == "/v1/completions"


def test_embeddings_work_with_the_sdks_default_base64_encoding(gateway, api_key, fake_upstream):
    result = sdk(gateway, api_key).embeddings.create(model="dos-ai-embed", input=["one", "two"])

    assert [item.embedding for item in result.data] == [[0.25, -0.5, 0.75], [0.25, -0.5, 0.75]]
    assert result.usage.prompt_tokens == 8
    assert UsageRecord.objects.get().prompt_tokens == 8


def test_a_chat_model_is_refused_on_embeddings(gateway, api_key):
    with pytest.raises(openai.BadRequestError) as raised:
        sdk(gateway, api_key).embeddings.create(model="dos-ai", input="x")

    assert raised.value.body["code"] == "invalid_value"


def test_the_request_id_is_ours_and_the_clients_own_is_echoed_beside_it(gateway, api_key):
    headers = {"Authorization": f"Bearer {api_key}"}
    given = httpx.get(f"{gateway.url}/v1/models", headers={**headers, "x-request-id": "trace-abc.123"})
    again = httpx.get(f"{gateway.url}/v1/models", headers={**headers, "x-request-id": "trace-abc.123"})
    plain = httpx.get(f"{gateway.url}/v1/models", headers=headers)
    hostile = httpx.get(f"{gateway.url}/v1/models", headers={**headers, "x-request-id": "<script>"})

    ours = [response.headers["x-request-id"] for response in (given, again, plain, hostile)]
    assert all(re.fullmatch(r"req_[0-9a-f]{32}", request_id) for request_id in ours)
    assert len(set(ours)) == 4
    assert given.headers["x-client-request-id"] == again.headers["x-client-request-id"] == "trace-abc.123"
    assert "x-client-request-id" not in plain.headers
    assert "x-client-request-id" not in hostile.headers


def test_successful_use_sets_last_used_at_once_a_minute(gateway, api_key, api_user, fake_upstream):
    client = sdk(gateway, api_key)
    key = ApiKey.objects.get(owner=api_user)
    assert key.last_used_at is None

    client.chat.completions.create(model="dos-ai", messages=[{"role": "user", "content": "Hi"}])
    first = ApiKey.objects.get(pk=key.pk).last_used_at
    client.chat.completions.create(model="dos-ai", messages=[{"role": "user", "content": "Hi"}])
    second = ApiKey.objects.get(pk=key.pk).last_used_at

    assert first is not None
    assert second == first  # throttled: no second write within the minute


def test_client_disconnect_mid_stream_cancels_the_upstream_request(gateway, api_key, fake_upstream):
    fake_upstream.chunk_delay = 0.4
    body = {"model": "dos-ai", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    with httpx.stream(
        "POST", f"{gateway.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"}
    ) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line)
        assert first.startswith("data: ")
    # Leaving the block closed the connection after one event.

    assert fake_upstream.disconnected.wait(timeout=5)
    assert not fake_upstream.stream_finished.is_set()
    record = wait_for(lambda: UsageRecord.objects.filter(status_code=499).first())
    assert record.streamed is True
    assert record.completion_tokens >= 1
    assert record.cost_micros > 0
