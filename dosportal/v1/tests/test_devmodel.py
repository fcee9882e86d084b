"""The built-in development model: deterministic, streamed word by word, honest counts, labelled."""

from __future__ import annotations

import openai
import pytest

from dosportal.v1.devmodel import DevelopmentModel, count_tokens

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "Hello there!"}]


@pytest.fixture
def dev_client(gateway_factory, api_key, transactional_db) -> openai.OpenAI:
    gateway = gateway_factory(DOS_AI_UPSTREAM_URL="")
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=api_key, max_retries=0)


def test_it_is_labelled_as_the_development_model(dev_client):
    listed = dev_client.models.list().data

    assert {model.owned_by for model in listed} == {"dos-ai-development-model"}
    assert listed[0].model_extra["description"].startswith("Built-in development model")


def test_it_answers_deterministically_with_honest_token_counts(dev_client):
    first = dev_client.chat.completions.create(model="dos-ai", messages=HELLO)
    second = dev_client.chat.completions.create(model="dos-ai", messages=HELLO)

    text = first.choices[0].message.content
    assert text == second.choices[0].message.content
    assert "development model" in text
    assert first.usage.completion_tokens == count_tokens(text)
    # "Hello there!" is 3 tokens (Hello, there, !) plus 3 of message framing.
    assert first.usage.prompt_tokens == 6


def test_it_streams_word_by_word_and_the_words_make_the_reply(dev_client):
    whole = dev_client.chat.completions.create(model="dos-ai", messages=HELLO).choices[0].message.content
    pieces = [
        chunk.choices[0].delta.content
        for chunk in dev_client.chat.completions.create(model="dos-ai", messages=HELLO, stream=True)
        if chunk.choices and chunk.choices[0].delta.content
    ]

    assert "".join(pieces) == whole
    assert len(pieces) == len(whole.split())


def test_it_honours_max_tokens(dev_client):
    completion = dev_client.chat.completions.create(model="dos-ai", messages=HELLO, max_tokens=5)

    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 5
    assert completion.choices[0].message.content == "Hello! I am the "  # Hello ! I am the


def test_it_embeds_deterministically_with_unit_vectors(dev_client):
    first = dev_client.embeddings.create(model="dos-ai-embed", input="the same text").data[0].embedding
    second = dev_client.embeddings.create(model="dos-ai-embed", input="the same text").data[0].embedding
    other = dev_client.embeddings.create(model="dos-ai-embed", input="other text").data[0].embedding

    assert first == second
    assert first != other
    assert len(first) == 256
    assert abs(sum(v * v for v in first) - 1.0) < 1e-4


async def test_completions_stream_ends_with_the_finish_reason():
    stream = await DevelopmentModel(delay=0).open_stream("completions", {"model": "dos-ai", "prompt": "Hi"})
    import json

    events = [json.loads(event) async for batch in stream.batches() for event in batch]

    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert "".join(e["choices"][0]["text"] for e in events).startswith("Hello! I am the DOS AI development model")
