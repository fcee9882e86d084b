"""A seeded 30-day history: two keys of the owner (one leaked, with a spike), two models,
one failed request, an outsider's usage on the same days and a record just outside the window.

Every number below is chosen so the expected totals can be written down by hand:
a chat request is 1,000 input + 500 output tokens of dos-ai at $0.50 / $1.50 per
million, i.e. 500 + 750 = 1,250 micro-USD; an embedding request is 2,000 input
tokens of dos-ai-embed at $0.02 per million, i.e. 40 micro-USD.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass

import pytest
from django.utils import timezone

from accounts.models import User
from apikeys.models import ApiKey
from apikeys.services import api_key_revoke
from billing.models import ServedModel, UsageRecord
from billing.services import credit_reserve, usage_settle
from dosportal.testing.keys import key_for
from dosportal.testing.settlements import call_settlement

CHAT_COST = 1_250
EMBED_COST = 40
_request_ids = itertools.count(1)


def add_usage(
    api_key: ApiKey,
    *,
    days_ago: int,
    count: int = 1,
    model: str = "dos-ai",
    prompt_tokens: int = 1_000,
    completion_tokens: int = 500,
    cost_micros: int = CHAT_COST,
    status_code: int = 200,
    endpoint: str = "chat/completions",
) -> None:
    """`count` usage records at noon UTC, `days_ago` days before today."""
    today = timezone.now().astimezone(dt.UTC).date()
    at = dt.datetime.combine(today - dt.timedelta(days=days_ago), dt.time(12), tzinfo=dt.UTC)
    UsageRecord.objects.bulk_create(
        UsageRecord(
            request_id=f"req_seed_{next(_request_ids)}",
            user_id=api_key.owner_id,
            api_key=api_key,
            endpoint=endpoint,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_micros=cost_micros,
            status_code=status_code,
            latency_ms=120,
            created_at=at + dt.timedelta(seconds=index),
        )
        for index in range(count)
    )


def settle_usage(
    api_key: ApiKey,
    request_id: str,
    *,
    prompt_tokens: int = 1_000,
    completion_tokens: int = 500,
    at: dt.datetime | None = None,
    model: str = "dos-ai",
) -> UsageRecord | None:
    """A real charge through the services, as the gateway makes one: a hold, then settlement of a
    call of `model`, priced by billing from the model's row (dos-ai: $0.50 / $1.50 per million),
    with its ledger entry. The one place tests make charges."""
    served = ServedModel.objects.get(name=model)
    hold_id = credit_reserve(user_id=api_key.owner_id, amount_micros=100_000, request_id=request_id)
    assert hold_id is not None, "the test account cannot cover the hold"
    return usage_settle(
        settlement=call_settlement(
            hold_id=hold_id,
            user_id=api_key.owner_id,
            api_key_id=api_key.pk,
            request_id=request_id,
            endpoint="embeddings" if served.kind == ServedModel.Kind.EMBEDDING else "chat/completions",
            model=served.name,
            input_price_micros_per_million=served.input_price_micros_per_million,
            output_price_micros_per_million=served.output_price_micros_per_million,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_ms=120,
            started_at=at or dt.datetime.now(dt.UTC),
        )
    )


@dataclass
class History:
    production: ApiKey
    leaked: ApiKey
    unused_revoked: ApiKey
    outsider_key: ApiKey
    today: dt.date

    def day(self, days_ago: int) -> dt.date:
        return self.today - dt.timedelta(days=days_ago)


@pytest.fixture
def history(owner: User, outsider: User) -> History:
    production = key_for(owner, "Production backend")
    leaked = key_for(owner, "CI runner")
    unused_revoked = key_for(owner, "Old laptop")
    api_key_revoke(api_key=unused_revoked)
    outsider_key = key_for(outsider, "Outsider app")

    # Production: 10 chat requests every other day, 5 embeddings on one day, one failed call.
    for days_ago in (10, 8, 6, 4, 2):
        add_usage(production, days_ago=days_ago, count=10)
    add_usage(
        production,
        days_ago=4,
        count=5,
        model="dos-ai-embed",
        endpoint="embeddings",
        prompt_tokens=2_000,
        completion_tokens=0,
        cost_micros=EMBED_COST,
    )
    add_usage(production, days_ago=2, status_code=502, prompt_tokens=0, completion_tokens=0, cost_micros=0)
    # CI runner: a trickle, then 200 requests in one day (it leaked), then revoked.
    for days_ago in (9, 7, 5):
        add_usage(leaked, days_ago=days_ago, count=2)
    add_usage(leaked, days_ago=3, count=200)
    api_key_revoke(api_key=leaked)
    # Outside the window, and another account's usage: never on the owner's pages.
    add_usage(production, days_ago=30, count=7)
    add_usage(outsider_key, days_ago=1, count=1_000)

    return History(production, leaked, unused_revoked, outsider_key, timezone.now().astimezone(dt.UTC).date())
