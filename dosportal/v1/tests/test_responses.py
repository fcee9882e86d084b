"""POST /v1/responses through the same gate as chat: the official SDK, metering, streams, errors."""

from __future__ import annotations

import httpx
import openai
import pytest
from django.conf import settings

from billing.models import CreditAccount, CreditHold, LedgerEntry, ServedModel, UsageRecord
from dosportal.testing.costs import sent_bytes, token_cost
from dosportal.testing.upstream import COMPLETION_TOKENS, PROMPT_TOKENS, REPLY_WORDS
from dosportal.v1.validation import parse_responses

pytestmark = pytest.mark.django_db(transaction=True)


def sdk(gateway, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=api_key, max_retries=0)


def balance(user) -> int:
    return CreditAccount.objects.get(user=user).balance_micros


@pytest.fixture
def priced(served_models):
    """Prices that make the charge easy to write down: $1 per million in, $10 per million out."""
    ServedModel.objects.filter(name="dos-ai").update(
        upstream_model="org/upstream-7b",
        input_price_micros_per_million=1_000_000,
        output_price_micros_per_million=10_000_000,
    )


def test_a_response_is_answered_metered_and_charged_to_the_micro_dollar(
    gateway, api_key, api_user, priced, fake_upstream
):
    before = balance(api_user)

    response = sdk(gateway, api_key).responses.create(model="dos-ai", input="Say hello", max_output_tokens=50)

    assert response.output_text == "".join(REPLY_WORDS)
    assert response.model == "dos-ai"  # the public name, never the upstream's
    assert (response.usage.input_tokens, response.usage.output_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    record = UsageRecord.objects.get()
    cost = PROMPT_TOKENS * 1 + COMPLETION_TOKENS * 10  # micro-USD
    assert (record.endpoint, record.prompt_tokens, record.completion_tokens, record.cost_micros) == (
        "responses", PROMPT_TOKENS, COMPLETION_TOKENS, cost
    )  # fmt: skip
    assert balance(api_user) == before - cost
    assert LedgerEntry.objects.get(usage=record).amount_micros == -cost
    sent = fake_upstream.requests[-1]
    assert sent["path"] == "/v1/responses"
    assert sent["body"]["model"] == "org/upstream-7b"
    assert sent["body"]["max_output_tokens"] == 50
    assert sent["body"]["store"] is False


def test_without_max_output_tokens_the_default_budget_is_admitted_and_forwarded(
    gateway, api_key, priced, fake_upstream
):
    body = {"model": "dos-ai", "input": "abcd" * 10, "instructions": "Be brief."}
    response = httpx.post(f"{gateway.url}/v1/responses", json=body, headers={"Authorization": f"Bearer {api_key}"})

    assert response.status_code == 200
    assert fake_upstream.requests[-1]["body"]["max_output_tokens"] == 1024
    # the body's bound (its bytes, and the template allowance) plus the 1,024-token budget
    cost = token_cost(body, parse_responses)
    assert cost == len(sent_bytes(body)) + settings.DOS_AI_PROMPT_OVERHEAD_TOKENS + 1024
    assert response.headers["x-ratelimit-remaining-tokens"] == str(100_000 - cost)


def test_a_streamed_response_passes_the_typed_events_and_is_charged_once(
    gateway, api_key, api_user, priced, fake_upstream
):
    before = balance(api_user)

    events = list(sdk(gateway, api_key).responses.create(model="dos-ai", input="Say hello", stream=True))

    types = [event.type for event in events]
    assert types[0] == "response.created"
    assert types.count("response.output_text.delta") == len(REPLY_WORDS)
    assert types[-1] == "response.completed"
    assert events[0].response.model == events[-1].response.model == "dos-ai"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "".join(REPLY_WORDS)
    record = UsageRecord.objects.get()
    assert (record.streamed, record.prompt_tokens, record.completion_tokens) == (True, PROMPT_TOKENS, COMPLETION_TOKENS)
    assert balance(api_user) == before - (PROMPT_TOKENS + COMPLETION_TOKENS * 10)
    assert not CreditHold.objects.exists()


def test_the_raw_stream_names_each_event_and_ends_without_done(gateway, api_key, priced, fake_upstream):
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/responses",
        json={"model": "dos-ai", "input": "hi", "stream": True},
        headers={"Authorization": f"Bearer {api_key}"},
    ) as response:
        body = response.read().decode()

    assert response.headers["content-type"].startswith("text/event-stream")
    assert body.startswith("event: response.created\ndata: {")
    assert "org/upstream-7b" not in body
    assert "[DONE]" not in body
    assert body.rstrip().split("\n")[-2] == "event: response.completed"


def test_a_stream_cut_off_by_the_upstream_is_an_error_event_charged_for_what_was_delivered(
    gateway, api_key, api_user, priced, fake_upstream
):
    fake_upstream.mode = "truncate"  # three words, then the connection ends without response.completed
    before = balance(api_user)

    with pytest.raises(openai.APIError) as raised:
        list(sdk(gateway, api_key).responses.create(model="dos-ai", input="Say hello", stream=True))

    assert raised.value.body == {
        "message": "The inference server ended the stream before it was complete.",
        "type": "upstream_error",
        "code": "upstream_unavailable",
    }
    record = UsageRecord.objects.get()
    # "Say hello" estimated: 3 + ceil(9 / 4) = 6; delivered "Hello from the" = 14 chars: 4
    assert (record.status_code, record.prompt_tokens, record.completion_tokens) == (502, 6, 4)
    assert balance(api_user) == before - (6 + 4 * 10)
    assert not CreditHold.objects.exists()


def test_without_usage_from_the_upstream_the_delivered_text_is_estimated(
    gateway, api_key, api_user, priced, fake_upstream
):
    fake_upstream.mode = "no_usage"  # the upstream sends no usage: the gateway estimates
    before = balance(api_user)

    events = list(sdk(gateway, api_key).responses.create(model="dos-ai", input="Say hello", stream=True))

    assert events[-1].type == "response.completed"
    record = UsageRecord.objects.get()
    # "Say hello" estimated: 3 + ceil(9 / 4) = 6; delivered "Hello from the fake upstream." = 29 chars: 8
    assert (record.prompt_tokens, record.completion_tokens) == (6, 8)
    assert balance(api_user) == before - (6 + 8 * 10)


def test_previous_response_id_background_and_retrieval_are_refused_in_the_error_shape(gateway, api_key, priced):
    client = sdk(gateway, api_key)

    with pytest.raises(openai.BadRequestError) as previous:
        client.responses.create(model="dos-ai", input="more", previous_response_id="resp_abc")
    with pytest.raises(openai.BadRequestError) as background:
        client.responses.create(model="dos-ai", input="later", background=True)
    with pytest.raises(openai.NotFoundError) as retrieved:
        client.responses.retrieve("resp_abc")

    assert previous.value.body["code"] == "invalid_value"
    assert "previous_response_id" in previous.value.body["message"]
    assert background.value.body == {
        "message": "'background' is not supported: background responses finish after the call, "
        "when nothing meters them.",
        "type": "invalid_request_error",
        "code": "invalid_value",
    }
    assert retrieved.value.body["code"] == "not_found"
    assert not UsageRecord.objects.exists()
    assert not CreditHold.objects.exists()


def test_an_embedding_model_is_refused_on_responses(gateway, api_key, served_models):
    with pytest.raises(openai.BadRequestError) as raised:
        sdk(gateway, api_key).responses.create(model="dos-ai-embed", input="x")

    assert raised.value.body["message"] == "The model 'dos-ai-embed' does not support /v1/responses."


def test_the_development_model_answers_responses_with_honest_usage(gateway_factory, api_key, api_user):
    dev = gateway_factory(DOS_AI_UPSTREAM_URL="")
    client = sdk(dev, api_key)

    plain = client.responses.create(model="dos-ai", input="Say hello", max_output_tokens=200)
    streamed = list(client.responses.create(model="dos-ai", input="Say hello", stream=True))

    assert plain.output_text.startswith("Hello! I am the DOS AI development model")
    assert plain.usage.output_tokens > 10
    deltas = "".join(e.delta for e in streamed if e.type == "response.output_text.delta")
    assert deltas == plain.output_text
    assert streamed[-1].response.usage.output_tokens == plain.usage.output_tokens
    assert UsageRecord.objects.filter(endpoint="responses").count() == 2
