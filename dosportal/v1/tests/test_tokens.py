"""What a request can cost in tokens (dosportal.v1.tokens): the prompt's upper bound (the body's
bytes, media counted by the setting) plus the completion budget, for admission and the hold; and
the estimate charged when the upstream reports no usage (a quarter of a token per ASCII letter,
digit or space, a whole one per other character), + 4 per chat message, + 3 for the reply."""

from __future__ import annotations

import json

import pytest

from dosportal.v1.errors import ApiError
from dosportal.v1.tokens import estimate_chat_prompt_tokens, estimate_input_tokens, estimate_text_tokens
from dosportal.v1.validation import parse_chat, parse_completion, parse_embedding, parse_responses


@pytest.mark.parametrize(
    ("text", "tokens"), [("", 0), ("a", 1), ("abcd", 1), ("abcde", 2), ("x" * 400, 100), ("x" * 401, 101)]
)
def test_text_is_one_token_per_four_characters_rounded_up(text, tokens):
    assert estimate_text_tokens(text) == tokens


def test_punctuation_and_non_latin_text_count_a_token_per_character():
    assert estimate_text_tokens("héllo wörld") == 2 + 3  # é, ö; then 9 ASCII characters
    assert estimate_text_tokens("!" * 20_000) == 20_000
    assert estimate_text_tokens("漢字テキスト") == 6
    assert estimate_text_tokens("👍👍") == 2


def test_a_chat_prompt_adds_four_per_message_and_three_for_the_reply():
    assert estimate_chat_prompt_tokens([{"role": "user", "content": "Hello!"}]) == 3 + 4 + (2 + 1)
    assert estimate_chat_prompt_tokens(
        [
            {"role": "system", "content": "You are terse."},  # "." 1, 13 characters 4
            {"role": "user", "content": "Hi"},  # 1
        ]
    ) == 3 + (4 + 5) + (4 + 1)


def test_names_multipart_text_and_missing_content_are_counted():
    messages = [
        {"role": "user", "name": "alice", "content": "abcd"},  # name 2, content 1
        {"role": "user", "content": [{"type": "text", "text": "abcdefgh"}, {"type": "image_url", "image_url": {}}]},
        {"role": "assistant", "content": None, "tool_calls": []},  # "[]": 2
    ]

    # The image part counts DOS_AI_IMAGE_PART_TOKENS (1,500).
    assert estimate_chat_prompt_tokens(messages) == 3 + (4 + 1 + 2) + (4 + 2 + 1_500) + (4 + 2)


@pytest.mark.parametrize(
    ("value", "tokens"),
    [
        ("abcdefgh", 2),
        (["abcd", "abcde"], 3),
        ([101, 102, 103], 3),  # token ids count as themselves
        ([[1, 2], [3, 4, 5]], 5),
        ([], 0),
        (None, 0),
    ],
)
def test_prompts_and_embedding_inputs(value, tokens):
    assert estimate_input_tokens(value) == tokens


CHAT = {"model": "dos-ai", "messages": [{"role": "user", "content": "Hello!"}]}  # estimated at 10 prompt tokens


def test_chat_cost_is_the_prompts_bound_plus_max_tokens(settings):
    body = {**CHAT, "max_tokens": 50}
    raw = json.dumps(body).encode()

    parsed = parse_chat(body, raw)

    overhead = settings.DOS_AI_PROMPT_OVERHEAD_TOKENS
    assert (parsed.prompt_bound, parsed.completion_tokens, parsed.prompt_estimate) == (len(raw) + overhead, 50, 10)
    assert parsed.token_cost == len(raw) + overhead + 50


@pytest.mark.parametrize(
    "text",
    [
        "!" * 20_000,  # a punctuation run: a token a character to a real tokenizer
        "漢字のテキスト" * 500,  # CJK: one to three tokens a character
        "👍🏽" * 1_000,  # emoji with modifiers: up to 8 bytes, several tokens, each
        "\u0000\n" * 100,
    ],
)
def test_the_bound_is_at_least_one_token_per_utf8_byte_of_the_text(text):
    """A byte-level tokenizer cannot produce more tokens than the UTF-8 bytes it reads."""
    for body in (
        {"model": "dos-ai", "messages": [{"role": "user", "content": text}]},
        {"model": "dos-ai", "prompt": text},
        {"model": "dos-ai", "messages": [{"role": "user", "content": "hi"}], "documents": [{"text": text}]},
        {"model": "dos-ai", "messages": [{"role": "user", "content": "hi"}], "guided_json": {"a": text}},
    ):
        raw = json.dumps(body).encode()  # ASCII-escaped: longer than its UTF-8, still a bound
        parse = parse_chat if "messages" in body else parse_completion
        for given in (raw, None):
            assert parse(body, given).prompt_bound >= len(text.encode())


def test_a_base64_image_counts_its_setting_not_its_bytes(settings):
    settings.DOS_AI_IMAGE_PART_TOKENS = 2_000
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 400_000}}
    body = {"model": "dos-ai", "messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, image]}]}
    raw = json.dumps(body).encode()

    bound = parse_chat(body, raw).prompt_bound

    assert 2_000 < bound < 2_000 + 200  # the image's 400 kB are not 400,000 tokens


def test_the_largest_of_max_tokens_and_max_completion_tokens_is_admitted_and_n_multiplies():
    # The upstream may honour either field, so the budget is the larger of the two.
    assert parse_chat({**CHAT, "max_tokens": 50, "max_completion_tokens": 20, "n": 3}).completion_tokens == 150
    assert parse_chat({**CHAT, "max_tokens": 1, "max_completion_tokens": 100_000}).completion_tokens == 100_000


def test_without_a_maximum_the_default_is_charged(settings):
    assert parse_chat(CHAT).completion_tokens == 1024
    assert parse_chat({**CHAT, "n": 2}).completion_tokens == 2048

    settings.DOS_AI_DEFAULT_MAX_TOKENS = 77
    assert parse_chat(CHAT).completion_tokens == 77


def test_completions_and_embeddings():
    completion = parse_completion({"model": "dos-ai", "prompt": "abcdefgh", "max_tokens": 5})
    embedding = parse_embedding({"model": "dos-ai-embed", "input": "abcdefghi"})

    assert (completion.prompt_estimate, completion.completion_tokens) == (2, 5)
    assert (embedding.prompt_estimate, embedding.completion_tokens) == (3, 0)


@pytest.mark.parametrize(
    ("prompt", "generations"),
    [("hi", 1), ([1, 2, 3], 1), (["hi"] * 50, 50), ([[1, 2], [3]], 2)],
)
def test_a_completions_prompt_list_is_budgeted_per_prompt(prompt, generations):
    """The upstream generates up to max_tokens for each prompt of a list (and each choice)."""
    parsed = parse_completion({"model": "dos-ai", "prompt": prompt, "max_tokens": 1_000, "n": 2, "best_of": 3})

    assert parsed.completion_tokens == 1_000 * 3 * generations


@pytest.mark.parametrize("alias", ["n_predict", "max_new_tokens"])
def test_other_servers_names_for_the_budget_are_admitted_too(alias):
    # llama.cpp reads n_predict, TGI max_new_tokens: whichever is largest is what may be generated.
    parsed = parse_completion({"model": "dos-ai", "prompt": "abcd", "max_tokens": 1, alias: 100_000})

    assert parsed.completion_tokens == 100_000
    assert parsed.body["max_tokens"] == 1  # forwarded as sent: the upstream may obey either, both were admitted


def test_a_negative_n_predict_meaning_unlimited_is_refused():
    with pytest.raises(ApiError) as raised:
        parse_completion({"model": "dos-ai", "prompt": "abcd", "n_predict": -1})

    assert raised.value.message == "Invalid type for 'n_predict': expected an integer between 1 and 2147483647."


@pytest.mark.parametrize("alias", ["max_tokens", "max_completion_tokens", "n_predict", "max_new_tokens"])
def test_responses_count_every_budget_field_the_upstream_could_obey(alias):
    parsed = parse_responses({"model": "dos-ai", "input": "hi", "max_output_tokens": 10, alias: 100_000})

    assert parsed.completion_tokens == 100_000
    assert (parsed.body["max_output_tokens"], parsed.body[alias]) == (10, 100_000)  # both admitted


def test_responses_without_a_budget_get_the_default_written_into_max_output_tokens(settings):
    parsed = parse_responses({"model": "dos-ai", "input": "hi"})

    assert parsed.completion_tokens == settings.DOS_AI_DEFAULT_MAX_TOKENS
    assert parsed.body["max_output_tokens"] == settings.DOS_AI_DEFAULT_MAX_TOKENS


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("previous_response_id", "resp_1"),
        ("conversation", "conv_1"),
        ("conversation", {"id": "conv_1"}),
        ("prompt", {"id": "pmpt_1", "variables": {}}),
        ("background", True),
        ("chat_template", "{% for m in messages %}{{ m.content }}{% endfor %}"),
    ],
)
def test_responses_refuse_server_side_state_the_gateway_cannot_meter(field, value):
    with pytest.raises(ApiError) as raised:
        parse_responses({"model": "dos-ai", "input": "hi", field: value})

    assert (raised.value.status, raised.value.code) == (400, "invalid_value")
    assert raised.value.message.startswith(f"'{field}' is not supported: ")


def test_a_custom_chat_template_is_refused_on_chat():
    with pytest.raises(ApiError) as raised:
        parse_chat({**CHAT, "chat_template": "{% for i in range(100000) %}{{ messages[0].content }}{% endfor %}"})

    assert (raised.value.status, raised.value.code) == (400, "invalid_value")
    assert "'chat_template' is not supported" in raised.value.message
