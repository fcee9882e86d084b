"""The default configuration holds 500 concurrent streams: no pool timeouts, upstream or database."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from accounts.services import account_set_limits
from billing.models import CreditAccount, UsageRecord
from dosportal.testing.upstream import REPLY_WORDS

pytestmark = pytest.mark.django_db(transaction=True)

STREAMS = 500


async def _stream(client: httpx.AsyncClient, api_key: str) -> tuple[int, int, bool]:
    body = {"model": "dos-ai", "stream": True, "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}
    async with client.stream(
        "POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"}
    ) as response:
        events = [line async for line in response.aiter_lines() if line]
    return response.status_code, len(events), events[-1] == "data: [DONE]"


def test_five_hundred_concurrent_streams_all_complete(gateway, api_key, api_user, fake_upstream):
    account_set_limits(user=api_user, requests_per_minute=10_000, tokens_per_minute=100_000_000)
    fake_upstream.chunk_delay = 0.5  # each stream lasts ~3.5 s, so all 500 are open together

    async def run() -> list[tuple[int, int, bool]]:
        limits = httpx.Limits(max_connections=STREAMS, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=gateway.url, limits=limits, timeout=120) as client:
            return await asyncio.gather(*(_stream(client, api_key) for _ in range(STREAMS)))

    results = asyncio.run(run())

    assert results == [(200, len(REPLY_WORDS) + 2, True)] * STREAMS
    assert UsageRecord.objects.filter(status_code=200, streamed=True).count() == STREAMS
    assert CreditAccount.objects.get(user=api_user).held_micros == 0
