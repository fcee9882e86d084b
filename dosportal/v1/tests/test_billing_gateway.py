"""Credit at the gateway: 402, holds, exact settlement, concurrency, failures, disconnects."""

from __future__ import annotations

import threading

import httpx
import pytest

from accounts.services import account_set_limits
from billing.models import CreditAccount, CreditHold, LedgerEntry, ServedModel, UsageRecord
from billing.money import exact_places, format_usd
from billing.selectors import ledger_sum_micros
from dosportal.testing.costs import hold_micros, parsed
from dosportal.testing.gateway import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

# The fake upstream reports 11 prompt and 6 completion tokens: ceil(11 × 0.50 + 6 × 1.50) = 15
# micro-USD charged. The hold is the request's worst case: its body's bytes as prompt tokens
# (plus the template allowance) and max_tokens, priced (dosportal.testing.costs).
EXACT = {"model": "dos-ai", "max_tokens": 6, "messages": [{"role": "user", "content": "Hello, world!!"}]}
EXACT_COST = 15
EXACT_HOLD = hold_micros(EXACT)


def chat(gateway, api_key: str, body: dict = EXACT) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
    )


def usd(micros: int) -> str:
    return format_usd(micros, exact_places(micros))


def set_balance(user, micros: int) -> None:
    """Rewrite history to a single grant so balance and ledger still agree."""
    LedgerEntry.objects.filter(user=user).delete()
    LedgerEntry.objects.create(user=user, kind="grant", amount_micros=micros, balance_after_micros=micros)
    CreditAccount.objects.filter(user=user).update(balance_micros=micros, held_micros=0)


def test_a_just_affordable_request_passes_and_one_micro_less_is_refused(gateway, api_key, api_user, fake_upstream):
    set_balance(api_user, EXACT_HOLD - 1)
    refused = chat(gateway, api_key)
    set_balance(api_user, EXACT_HOLD)
    admitted = chat(gateway, api_key)

    assert refused.status_code == 402
    assert refused.json()["error"]["code"] == "insufficient_balance"
    assert refused.json()["error"]["message"] == (
        f"This request may cost up to {usd(EXACT_HOLD)}, and {usd(EXACT_HOLD - 1)} of credit is "
        "available. Lower max_tokens (or shorten the prompt), or add credit to your account."
    )
    assert admitted.status_code == 200
    account = CreditAccount.objects.get(user=api_user)
    assert (account.balance_micros, account.held_micros) == (EXACT_HOLD - EXACT_COST, 0)


def test_the_charge_is_usage_times_price_to_the_micro_dollar(gateway, api_key, api_user, fake_upstream):
    ServedModel.objects.filter(name="dos-ai").update(
        input_price_micros_per_million=3_000_000, output_price_micros_per_million=15_000_000
    )
    before = CreditAccount.objects.get(user=api_user).balance_micros

    response = chat(gateway, api_key, {**EXACT, "max_tokens": 100})

    assert response.status_code == 200
    # 11 × $3.00/M + 6 × $15.00/M = 33 + 90 micro-USD
    record = UsageRecord.objects.get()
    assert (record.prompt_tokens, record.completion_tokens, record.cost_micros) == (11, 6, 123)
    assert record.status_code == 200
    assert record.streamed is False
    assert record.request_id == response.headers["x-request-id"]
    assert CreditAccount.objects.get(user=api_user).balance_micros == before - 123
    entry = LedgerEntry.objects.get(usage=record)
    assert (entry.kind, entry.amount_micros, entry.balance_after_micros) == ("usage", -123, before - 123)
    assert ledger_sum_micros(user=api_user) == before - 123


def test_an_upstream_failure_leaves_the_balance_unchanged(gateway, api_key, api_user, fake_upstream):
    fake_upstream.mode = "error500"
    before = CreditAccount.objects.get(user=api_user).balance_micros

    response = chat(gateway, api_key)

    assert response.status_code == 502
    account = CreditAccount.objects.get(user=api_user)
    assert (account.balance_micros, account.held_micros) == (before, 0)
    record = UsageRecord.objects.get()
    assert (record.status_code, record.cost_micros) == (502, 0)
    assert not LedgerEntry.objects.filter(kind="usage").exists()
    assert not CreditHold.objects.exists()


def test_a_refused_request_holds_nothing_and_records_nothing(gateway, api_key, api_user):
    set_balance(api_user, 0)

    assert chat(gateway, api_key).status_code == 402

    assert not CreditHold.objects.exists()
    assert not UsageRecord.objects.exists()


def test_concurrent_requests_never_spend_more_than_the_balance(gateway, api_key, api_user, fake_upstream):
    account_set_limits(user=api_user, requests_per_minute=1000, tokens_per_minute=10_000_000)
    set_balance(api_user, 10 * EXACT_HOLD)
    fake_upstream.response_delay = 0.2  # keep requests in flight together
    statuses: list[int] = []

    def one() -> None:
        statuses.append(chat(gateway, api_key).status_code)

    threads = [threading.Thread(target=one) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Ten holds fit at once; a call that settles (charging less than it held) makes room for more.
    served = statuses.count(200)
    assert sorted(set(statuses)) == [200, 402]
    assert 10 <= served < 50
    assert statuses.count(402) == 50 - served
    account = CreditAccount.objects.get(user=api_user)
    assert (account.balance_micros, account.held_micros) == (10 * EXACT_HOLD - served * EXACT_COST, 0)
    assert account.balance_micros >= 0
    assert ledger_sum_micros(user=api_user) == account.balance_micros
    assert UsageRecord.objects.filter(status_code=200).count() == served
    assert LedgerEntry.objects.filter(kind="usage").count() == served


def test_usage_beyond_the_completion_budget_is_charged_only_up_to_the_hold(gateway, api_key, api_user, fake_upstream):
    # max_tokens=1, but the upstream reports 6 completion tokens: at a price that makes the
    # usage (11 × $0.50 + 6 × $100) dearer than the hold, the charge stops at the hold.
    ServedModel.objects.filter(name="dos-ai").update(output_price_micros_per_million=100_000_000)
    body = {**EXACT, "max_tokens": 1}
    hold = hold_micros(body, output_price=100_000_000)
    assert hold < 606
    set_balance(api_user, hold)

    response = chat(gateway, api_key, body)

    assert response.status_code == 200
    account = CreditAccount.objects.get(user=api_user)
    assert (account.balance_micros, account.held_micros) == (0, 0)
    assert UsageRecord.objects.get().cost_micros == hold
    assert ledger_sum_micros(user=api_user) == 0


def test_a_stream_is_charged_from_the_upstreams_usage(gateway, api_key, api_user, fake_upstream):
    before = CreditAccount.objects.get(user=api_user).balance_micros

    response = chat(gateway, api_key, {**EXACT, "stream": True})

    assert response.text.endswith("data: [DONE]\n\n")
    record = wait_for(UsageRecord.objects.first, what="the settlement")
    assert (record.prompt_tokens, record.completion_tokens, record.cost_micros, record.streamed) == (11, 6, 15, True)
    assert CreditAccount.objects.get(user=api_user).balance_micros == before - 15


def test_a_stream_cut_by_the_client_is_charged_for_what_was_delivered(gateway, api_key, api_user, fake_upstream):
    fake_upstream.chunk_delay = 0.3
    before = CreditAccount.objects.get(user=api_user).balance_micros
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json={**EXACT, "stream": True},
        headers={"Authorization": f"Bearer {api_key}"},
    ) as response:
        next(line for line in response.iter_lines() if line)

    record = wait_for(UsageRecord.objects.first, what="the settlement")
    assert record.status_code == 499
    # No usage came from the upstream: prompt from the estimate, completion from the delivered text.
    assert record.prompt_tokens == parsed(EXACT).prompt_estimate == 13
    assert 1 <= record.completion_tokens < 6
    assert record.cost_micros > 0
    account = CreditAccount.objects.get(user=api_user)
    assert (account.balance_micros, account.held_micros) == (before - record.cost_micros, 0)
    assert ledger_sum_micros(user=api_user) == account.balance_micros


def test_a_price_change_applies_to_the_next_request(gateway, api_key, fake_upstream):
    assert chat(gateway, api_key).status_code == 200
    ServedModel.objects.filter(name="dos-ai").update(
        input_price_micros_per_million=1_000_000, output_price_micros_per_million=1_000_000
    )
    assert chat(gateway, api_key).status_code == 200

    assert list(UsageRecord.objects.order_by("created_at").values_list("cost_micros", flat=True)) == [15, 17]
