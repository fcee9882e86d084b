"""Two servers on different ports (two "hosts") sharing PostgreSQL and Redis: one limit per key,
one balance per account, exactly as one server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from accounts.services import account_set_limits
from billing.models import CreditAccount, CreditHold, LedgerEntry, UsageRecord
from billing.selectors import ledger_sum_micros
from dosportal.testing.costs import hold_micros

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = {"model": "dos-ai", "max_tokens": 6, "messages": [{"role": "user", "content": "Hello, world!!"}]}
CALL_COST = 15  # micro-USD: 11 prompt + 6 completion tokens at $0.50 / $1.50 per million (see test_billing_gateway)


@pytest.fixture
def hosts(gateway_factory):
    # A different environment is a different server process on its own port.
    first = gateway_factory(DOS_AI_RATE_WINDOW_SECONDS="30")
    second = gateway_factory(DOS_AI_RATE_WINDOW_SECONDS="30", DOS_AI_HOST_LABEL="second")
    assert first.port != second.port
    return first, second


def spread(hosts, api_key: str, count: int) -> list[int]:
    """`count` concurrent chat calls, alternating between the hosts; their statuses."""

    def call(index: int) -> int:
        url = f"{hosts[index % 2].url}/v1/chat/completions"
        return httpx.post(url, json=CHAT, headers={"Authorization": f"Bearer {api_key}"}, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(call, range(count)))


def test_one_requests_per_minute_limit_holds_across_two_hosts(hosts, api_key, api_user, fake_upstream):
    account_set_limits(user=api_user, requests_per_minute=10, tokens_per_minute=1_000_000)

    statuses = spread(hosts, api_key, 40)

    assert sorted(statuses) == [200] * 10 + [429] * 30
    assert UsageRecord.objects.count() == 10


def test_one_balance_holds_across_two_hosts(hosts, api_key, api_user, fake_upstream):
    hold = hold_micros(CHAT)  # each call holds its worst case and is charged CALL_COST
    LedgerEntry.objects.filter(user=api_user).delete()
    LedgerEntry.objects.create(user=api_user, kind="grant", amount_micros=5 * hold, balance_after_micros=5 * hold)
    CreditAccount.objects.filter(user=api_user).update(balance_micros=5 * hold, held_micros=0)

    statuses = spread(hosts, api_key, 20)

    # Five holds fit at once; a settled call frees what it held beyond its charge.
    served = statuses.count(200)
    assert 5 <= served <= (5 * hold) // CALL_COST
    assert sorted(statuses) == [200] * served + [402] * (20 - served)
    account = CreditAccount.objects.get(user=api_user)
    assert (account.balance_micros, account.held_micros) == (5 * hold - served * CALL_COST, 0)
    assert ledger_sum_micros(user=api_user) == account.balance_micros
    assert not CreditHold.objects.exists()
