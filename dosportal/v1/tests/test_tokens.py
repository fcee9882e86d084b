"""The admission estimate: ceil(chars / 4) per text, + 4 per chat message, + 3 for the reply,
plus the completion budget (max_completion_tokens, else max_tokens, else the default) × n."""

from __future__ import annotations

import pytest

from dosportal.v1.errors import ApiError
from dosportal.v1.tokens import estimate_chat_prompt_tokens, estimate_input_tokens, estimate_text_tokens
from dosportal.v1.validation import parse_chat, parse_completion, parse_embedding


@pytest.mark.parametrize(
    ("text", "tokens"), [("", 0), ("a", 1), ("abcd", 1), ("abcde", 2), ("x" * 400, 100), ("x" * 401, 101)]
)
def test_text_is_one_token_per_four_characters_rounded_up(text, tokens):
    assert estimate_text_tokens(text) == tokens


def test_unicode_is_counted_in_characters_not_bytes():
    assert estimate_text_tokens("héllo wörld") == 3  # 11 characters


def test_a_chat_prompt_adds_four_per_message_and_three_for_the_reply():
    assert estimate_chat_prompt_tokens([{"role": "user", "content": "Hello!"}]) == 3 + 4 + 2
    assert estimate_chat_prompt_tokens(
        [
            {"role": "system", "content": "You are terse."},  # 14 chars: 4
            {"role": "user", "content": "Hi"},  # 1
        ]
    ) == 3 + (4 + 4) + (4 + 1)


def test_names_multipart_text_and_missing_content_are_counted():
    messages = [
        {"role": "user", "name": "alice", "content": "abcd"},  # name 2, content 1
        {"role": "user", "content": [{"type": "text", "text": "abcdefgh"}, {"type": "image_url", "image_url": {}}]},
        {"role": "assistant", "content": None, "tool_calls": []},  # "[]": 1
    ]

    # The image part counts IMAGE_PART_TOKENS (1,500).
    assert estimate_chat_prompt_tokens(messages) == 3 + (4 + 1 + 2) + (4 + 2 + 1_500) + (4 + 1)


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


CHAT = {"model": "dos-ai", "messages": [{"role": "user", "content": "Hello!"}]}  # 9 prompt tokens


def test_chat_cost_is_prompt_plus_max_tokens():
    parsed = parse_chat({**CHAT, "max_tokens": 50})

    assert (parsed.prompt_tokens, parsed.completion_tokens) == (9, 50)


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
    completion = parse_completion({"model": "dos-ai", "prompt": ["abcd", "abcdefgh"], "max_tokens": 5})
    embedding = parse_embedding({"model": "dos-ai-embed", "input": "abcdefghi"})

    assert (completion.prompt_tokens, completion.completion_tokens) == (3, 5)
    assert (embedding.prompt_tokens, embedding.completion_tokens) == (3, 0)


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
