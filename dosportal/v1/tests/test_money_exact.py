"""Money exact in operation: a served call is charged exactly once and never past a limit; a
refused or failed one holds and costs nothing — whatever the prompt holds, whatever the upstream
reports, and when the worker is killed or stopped mid-stream.

Live uvicorn gateways on the test PostgreSQL and Redis, called with the official OpenAI SDK (or
httpx where the bytes matter), in front of an upstream that bills as harshly as a real one may
(dosportal.testing.exacting_upstream: a token per byte of prompt, every budget field obeyed).
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import os
import signal
import threading
import time

import httpx
import openai
import pytest
import redis
from django.conf import settings
from django.db.models import Sum

from accounts.services import account_set_limits
from apikeys.models import ApiKey
from apikeys.services import api_key_update
from billing.models import CreditAccount, CreditHold, LedgerEntry, UsageRecord
from billing.money import cost_micros
from billing.selectors import ledger_sum_micros
from dosportal.testing.costs import hold_micros, parsed
from dosportal.testing.exacting_upstream import utf8_bytes
from dosportal.testing.gateway import Gateway, gateway_env, test_database_url, wait_for
from dosportal.v1.tokens import estimate_text_tokens
from dosportal.v1.validation import parse_completion, parse_responses

pytestmark = pytest.mark.django_db(transaction=True)

LIVE_HOLDS = {"DOS_AI_HOLD_HEARTBEAT_SECONDS": "0.3", "DOS_AI_HOLD_STALE_SECONDS": "2"}


@pytest.fixture
def exacting(gateway_factory, exacting_upstream, transactional_db):
    return gateway_factory(DOS_AI_UPSTREAM_URL=exacting_upstream.url, **LIVE_HOLDS)


def sdk(gateway, raw_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=raw_key, max_retries=0)


def post(gateway, raw_key: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/{path}", json=body, headers={"Authorization": f"Bearer {raw_key}"}, timeout=60)


def set_balance(user, micros: int) -> None:
    LedgerEntry.objects.filter(user=user).delete()
    LedgerEntry.objects.create(user=user, kind="grant", amount_micros=micros, balance_after_micros=micros)
    CreditAccount.objects.filter(user=user).update(balance_micros=micros, held_micros=0)


def assert_exact(user) -> None:
    """Nothing held, the balance is the ledger's sum, every key's spent figure its usage's sum."""
    account = CreditAccount.objects.get(user=user)
    assert account.held_micros == 0
    assert not CreditHold.objects.filter(user=user).exists()
    assert account.balance_micros == ledger_sum_micros(user=user) >= 0
    for key in ApiKey.objects.filter(owner=user, spend_limit_micros__isnull=False):
        spent = key.usage_records.aggregate(total=Sum("cost_micros"))["total"] or 0
        assert (key.spend_spent_micros, key.spend_held_micros) == (spent, 0)


def usd(micros: int) -> str:
    from billing.money import exact_places, format_usd

    return format_usd(micros, exact_places(micros))


# --- limits a prompt cannot fool ---------------------------------------------------------------


def test_a_punctuation_run_cannot_take_a_key_past_its_spend_limit(exacting, api_key, api_user, exacting_upstream):
    """20,000 `!` are 5,000 tokens at four characters a token, and 20,000 to the upstream."""
    key = ApiKey.objects.get(owner=api_user)
    api_key_update(api_key=key, spend_limit_micros=5_000, spend_period="day")
    body = {"model": "dos-ai", "max_tokens": 1, "messages": [{"role": "user", "content": "!" * 20_000}]}

    with pytest.raises(openai.APIStatusError) as refused:
        sdk(exacting, api_key).chat.completions.create(**body)

    worst = hold_micros(body)
    assert worst > 10_000  # at least the 20,000 bytes, priced
    assert refused.value.status_code == 402
    assert refused.value.body["code"] == "key_spend_limit_exceeded"
    assert refused.value.body["message"].startswith(
        f"This request may cost up to {usd(worst)}; $0.005 of this API key's daily spend limit of $0.005 is left"
    )
    assert exacting_upstream.requests == []

    api_key_update(api_key=key, spend_limit_micros=worst, spend_period="day")
    answer = sdk(exacting, api_key).chat.completions.create(**body)

    reported = utf8_bytes(body["messages"])  # a token a byte: the 20,000 `!` and the role
    assert answer.usage.prompt_tokens == reported == 20_004
    record = UsageRecord.objects.get()
    assert record.cost_micros == cost_micros(
        prompt_tokens=reported, completion_tokens=1, input_price_per_million=500_000, output_price_per_million=1_500_000
    )
    key.refresh_from_db()
    assert key.spend_spent_micros == record.cost_micros <= key.spend_limit_micros
    assert_exact(api_user)


def test_a_hundred_concurrent_cjk_prompts_never_pass_the_key_limit_or_the_balance(
    exacting, api_key, api_user, exacting_upstream
):
    account_set_limits(user=api_user, requests_per_minute=1_000, tokens_per_minute=100_000_000)
    key = ApiKey.objects.get(owner=api_user)
    api_key_update(api_key=key, spend_limit_micros=10_000, spend_period="day")
    body = {"model": "dos-ai", "max_tokens": 16, "messages": [{"role": "user", "content": "漢字テキスト" * 666}]}
    exacting_upstream.response_delay = 0.3
    start = threading.Barrier(100)

    def call() -> int:
        start.wait()
        return post(exacting, api_key, "chat/completions", body).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=100) as pool:
        statuses = list(pool.map(lambda _: call(), range(100)))

    served = statuses.count(200)
    assert served >= 1
    assert sorted(statuses) == [200] * served + [402] * (100 - served)
    key.refresh_from_db()
    assert key.spend_spent_micros <= 10_000  # the CJK prompt reported at a token a byte, still within
    records = list(UsageRecord.objects.filter(status_code=200))
    assert len(records) == served
    assert {record.prompt_tokens for record in records} == {utf8_bytes(body["messages"])}
    assert_exact(api_user)

    # The account's balance: never below zero, never written off.
    account_set_limits(user=api_user, requests_per_minute=1_000, tokens_per_minute=100_000_000)
    api_key_update(api_key=key, spend_limit_micros=None)
    set_balance(api_user, 13_000)
    start = threading.Barrier(100)
    with concurrent.futures.ThreadPoolExecutor(max_workers=100) as pool:
        statuses = list(pool.map(lambda _: call(), range(100)))

    first = [record.pk for record in records]
    charged = UsageRecord.objects.filter(status_code=200).exclude(pk__in=first).aggregate(total=Sum("cost_micros"))
    assert statuses.count(200) >= 1
    assert CreditAccount.objects.get(user=api_user).balance_micros == 13_000 - charged["total"] >= 0
    assert_exact(api_user)


def test_a_completions_prompt_list_is_budgeted_for_every_prompt(exacting, api_key, api_user, exacting_upstream):
    account_set_limits(user=api_user, requests_per_minute=100, tokens_per_minute=20_000)
    body = {"model": "dos-ai", "prompt": ["hi"] * 50, "max_tokens": 1_000}

    response = post(exacting, api_key, "completions", body)

    assert response.status_code == 429
    requested = parsed(body, parse_completion).token_cost
    assert requested > 50_000
    assert response.json()["error"]["message"] == (
        f"Request too large for tokens per minute (TPM): limit 20000, requested {requested}. "
        "Send a shorter prompt or a smaller max_tokens."
    )
    assert exacting_upstream.requests == []


@pytest.mark.parametrize("alias", ["max_tokens", "max_completion_tokens", "n_predict", "max_new_tokens"])
def test_responses_count_every_budget_the_upstream_obeys(exacting, api_key, api_user, exacting_upstream, alias):
    account_set_limits(user=api_user, requests_per_minute=100, tokens_per_minute=2_000)
    body = {"model": "dos-ai", "input": "hi", "max_output_tokens": 10, alias: 100_000}

    refused = post(exacting, api_key, "responses", body)

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert exacting_upstream.requests == []

    account_set_limits(user=api_user, requests_per_minute=100, tokens_per_minute=1_000_000)
    answer = post(exacting, api_key, "responses", body)

    assert answer.status_code == 200
    assert answer.json()["usage"]["output_tokens"] == 100_000  # it obeyed the larger field, and was admitted to
    record = UsageRecord.objects.get()
    assert record.cost_micros == cost_micros(
        prompt_tokens=answer.json()["usage"]["input_tokens"],
        completion_tokens=100_000,
        input_price_per_million=500_000,
        output_price_per_million=1_500_000,
    )
    assert record.cost_micros <= hold_micros(body, parse_responses)
    assert_exact(api_user)


def test_server_side_state_is_refused_on_responses(exacting, api_key, exacting_upstream):
    for field, value in (("conversation", "conv_1"), ("prompt", {"id": "pmpt_1"}), ("previous_response_id", "r")):
        response = post(exacting, api_key, "responses", {"model": "dos-ai", "input": "hi", field: value})
        assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_value")
        assert response.json()["error"]["message"].startswith(f"'{field}' is not supported: ")
    assert exacting_upstream.requests == []


# --- no call outside a settlement -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("malformed", "The inference server's answer was malformed."),  # `choices` is the number 5
        ("not_an_object", "The inference server sent an unexpected response."),  # a JSON array
    ],
)
def test_a_malformed_answer_is_a_502_that_costs_and_holds_nothing(
    exacting, api_key, api_user, exacting_upstream, mode, message
):
    exacting_upstream.mode = mode
    before = CreditAccount.objects.get(user=api_user).balance_micros

    with pytest.raises(openai.APIStatusError) as raised:
        sdk(exacting, api_key).chat.completions.create(model="dos-ai", messages=[{"role": "user", "content": "hi"}])

    assert raised.value.status_code == 502
    assert raised.value.body == {
        "message": message,
        "type": "upstream_error",
        "code": "upstream_unavailable",
    }
    record = UsageRecord.objects.get()
    assert (record.status_code, record.cost_micros) == (502, 0)
    assert CreditAccount.objects.get(user=api_user).balance_micros == before
    assert_exact(api_user)


# --- what was delivered is what is charged ------------------------------------------------------


@pytest.mark.parametrize("mode", ["reasoning", "tool_calls", "responses_reasoning"])
def test_reasoning_and_tool_calls_a_client_left_early_are_charged(exacting, api_key, api_user, exacting_upstream, mode):
    exacting_upstream.mode, exacting_upstream.words, exacting_upstream.chunk_delay = mode, 20, 0.05
    path = "responses" if mode == "responses_reasoning" else "chat/completions"
    body = {"model": "dos-ai", "stream": True, "max_tokens": 200}
    body |= {"input": "hi"} if path == "responses" else {"messages": [{"role": "user", "content": "hi"}]}

    read = 0
    with httpx.stream(
        "POST", f"{exacting.url}/v1/{path}", json=body, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
    ) as response:
        for line in response.iter_lines():
            read += line.startswith("data: ")
            if read == 10:
                break

    record = wait_for(UsageRecord.objects.first, what="the settlement")
    assert record.status_code == 499
    assert record.completion_tokens >= estimate_text_tokens("think " * 5)  # at least half of what was read
    assert record.cost_micros == cost_micros(
        prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens,
        input_price_per_million=500_000,
        output_price_per_million=1_500_000,
    )
    assert_exact(api_user)


# --- a limit set while calls are in flight counts them -------------------------------------------


def test_a_spend_limit_set_during_calls_counts_what_they_hold(exacting, api_key, api_user, exacting_upstream):
    exacting_upstream.response_delay = 1.5
    body = {"model": "dos-ai", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    hold = hold_micros(body)
    key = ApiKey.objects.get(owner=api_user)
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        running = [pool.submit(post, exacting, api_key, "chat/completions", body) for _ in range(3)]
        wait_for(lambda: True if CreditHold.objects.count() == 3 else None, what="three calls in flight")
        api_key_update(api_key=key, spend_limit_micros=3 * hold, spend_period="day")

        key.refresh_from_db()
        assert key.spend_held_micros == 3 * hold
        late = post(exacting, api_key, "chat/completions", body)  # no room left beside the three
        assert late.status_code == 402
        assert [future.result().status_code for future in running] == [200, 200, 200]

    key.refresh_from_db()
    assert key.spend_held_micros == 0
    assert_exact(api_user)


# --- a killed worker, a stopped worker -------------------------------------------------------------


def _read_stream(url: str, raw_key: str, body: dict, received: list[int], died: list[bool]) -> None:
    try:
        with httpx.stream("POST", url, json=body, headers={"Authorization": f"Bearer {raw_key}"}, timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    received.append(1)
    except httpx.HTTPError:
        died.append(True)


def _own_gateway(exacting_upstream, *uvicorn_args: str) -> Gateway:
    return Gateway(gateway_env(test_database_url(), exacting_upstream.url, **LIVE_HOLDS), uvicorn_args=uvicorn_args)


def test_a_worker_killed_mid_stream_is_charged_for_what_it_delivered_and_frees_its_slots(
    api_key, api_user, exacting_upstream, _exacting_server
):
    key = ApiKey.objects.get(owner=api_user)
    api_key_update(api_key=key, max_concurrency=2)
    exacting_upstream.mode, exacting_upstream.words, exacting_upstream.chunk_delay = "long", 400, 0.05
    body = {"model": "dos-ai", "stream": True, "max_tokens": 1_000, "messages": [{"role": "user", "content": "hi"}]}
    doomed = _own_gateway(exacting_upstream)
    received: list[list[int]] = [[], []]
    died: list[bool] = []
    readers = [
        threading.Thread(target=_read_stream, args=(f"{doomed.url}/v1/chat/completions", api_key, body, got, died))
        for got in received
    ]
    for reader in readers:
        reader.start()
    wait_for(lambda: True if min(map(len, received)) >= 20 else None, timeout=20, what="20 chunks each")
    delivered_before_the_kill = [len(got) for got in received]
    time.sleep(1)  # several heartbeats land, each with at least that much delivered

    os.kill(doomed.process.pid, signal.SIGKILL)
    doomed.process.wait(timeout=10)
    for reader in readers:
        reader.join(timeout=10)
    assert len(died) == 2 or max(map(len, received)) < 400
    base = f"dosportal:rl:{{{key.pk}}}"
    assert redis.Redis.from_url(settings.REDIS_URL).zcard(f"{base}:inflight") == 2  # the dead calls' slots

    successor = _own_gateway(exacting_upstream)  # the next worker to start finds the dead holds
    try:
        wait_for(lambda: True if not CreditHold.objects.exists() else None, timeout=20, what="the holds settled")

        records = list(UsageRecord.objects.order_by("completion_tokens"))
        assert [record.status_code for record in records] == [500, 500]
        for record, before in zip(records, sorted(delivered_before_the_kill), strict=True):
            assert record.prompt_tokens == parsed(body).prompt_estimate
            assert record.completion_tokens >= estimate_text_tokens("word " * before)
            assert record.cost_micros == cost_micros(
                prompt_tokens=record.prompt_tokens,
                completion_tokens=record.completion_tokens,
                input_price_per_million=500_000,
                output_price_per_million=1_500_000,
            )
        assert redis.Redis.from_url(settings.REDIS_URL).zcard(f"{base}:inflight") == 0  # freed with the holds
        exacting_upstream.mode = "ok"
        assert post(successor, api_key, "chat/completions", {**body, "stream": False}).status_code == 200
        assert_exact(api_user)
    finally:
        successor.stop()


def test_a_stopped_worker_lets_its_streams_finish_then_settles_what_each_delivered(
    api_key, api_user, exacting_upstream, _exacting_server
):
    exacting_upstream.mode, exacting_upstream.words, exacting_upstream.chunk_delay = "long", 400, 0.05
    body = {"model": "dos-ai", "stream": True, "max_tokens": 1_000, "messages": [{"role": "user", "content": "hi"}]}
    stopping = _own_gateway(exacting_upstream, "--timeout-graceful-shutdown", "1")
    received: list[int] = []
    died: list[bool] = []
    reader = threading.Thread(
        target=_read_stream, args=(f"{stopping.url}/v1/chat/completions", api_key, body, received, died)
    )
    reader.start()
    wait_for(lambda: True if len(received) >= 10 else None, timeout=20, what="10 chunks")

    stopping.process.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then ends by the signal it caught (exit status -15).
    assert stopping.process.wait(timeout=15) in (0, -signal.SIGTERM)
    reader.join(timeout=10)

    record = wait_for(UsageRecord.objects.first, what="the settlement")
    assert record.status_code == 499  # cut by the shutdown after its grace period, charged as delivered
    assert estimate_text_tokens("word " * 10) <= record.completion_tokens <= estimate_text_tokens("word " * 400)
    assert record.cost_micros > 0
    assert_exact(api_user)
    stopping.log.close()


def test_a_live_streams_hold_is_not_taken_by_release_stale_holds(exacting, api_key, api_user, exacting_upstream):
    from django.core.management import call_command

    exacting_upstream.mode, exacting_upstream.words, exacting_upstream.chunk_delay = "long", 80, 0.05
    body = {"model": "dos-ai", "stream": True, "max_tokens": 1_000, "messages": [{"role": "user", "content": "hi"}]}
    received: list[int] = []
    reader = threading.Thread(
        target=_read_stream, args=(f"{exacting.url}/v1/chat/completions", api_key, body, received, [])
    )
    reader.start()
    wait_for(lambda: True if len(received) >= 5 else None, timeout=20, what="5 chunks")
    # The call is older than the cron's cutoff, as a long generation would be.
    CreditHold.objects.update(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
    time.sleep(0.7)

    call_command("release_stale_holds", "--older-than-minutes", "1")

    assert CreditHold.objects.count() == 1
    reader.join(timeout=30)
    record = wait_for(UsageRecord.objects.first, what="the settlement")
    assert (record.status_code, record.completion_tokens) == (200, 1_000)  # charged in full at its end
    assert_exact(api_user)


def test_a_hold_whose_reservation_was_never_acknowledged_is_settled_for_nothing(api_user, api_key):
    """A hold written by a reservation whose acknowledgement never came back is never renewed:
    the next pass over stale holds settles it for nothing."""
    from billing.services import credit_reserve_for_key
    from dosportal.testing.settlements import call_settlement

    call = call_settlement(
        hold_id=0, user_id=api_user.pk, api_key_id=ApiKey.objects.get(owner=api_user).pk, request_id="req_lost",
        input_price_micros_per_million=500_000, prompt_tokens=0, latency_ms=0, started_at=dt.datetime.now(dt.UTC),
    ).hold_record()  # fmt: skip
    credit_reserve_for_key(user_id=api_user.pk, amount_micros=700, request_id="req_lost", call=call)
    CreditHold.objects.update(heartbeat_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
    from django.core.management import call_command

    call_command("release_stale_holds", "--older-than-minutes", "1")

    record = UsageRecord.objects.get(request_id="req_lost")
    assert (record.cost_micros, record.prompt_tokens, record.completion_tokens) == (0, 0, 0)
    assert_exact(api_user)
