"""No call ends outside a settlement, wherever the client leaves.

The real /v1 ASGI application runs in this process, on the test PostgreSQL and Redis, in front of
a real upstream on 127.0.0.1. In each round the client of one request leaves (`http.disconnect`,
as uvicorn reports it; Django's handler then cancels the request's task) after `step` turns of
the event loop, for step = 0, 1, 2, … until a round completes without being cancelled: so the request is
cancelled at every `await` between its admission and its settlement (reservation, the endpoint
catalogue, the upstream call, the answer's parsing, the rate-limit headers, the response's
start, every streamed part) and in the middle of those that wait on I/O. After every round no
hold is left, the account holds nothing, its balance equals its ledger, and no concurrency slot
is left taken.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import redis
from django.conf import settings
from django.db import connections

from billing.models import CreditAccount, CreditHold, UsageRecord
from billing.selectors import ledger_sum_micros

pytestmark = pytest.mark.django_db(transaction=True)

MAX_STEPS = 3_000


def _scope(path: str, raw: bytes, raw_key: str) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
            (b"authorization", f"Bearer {raw_key}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def _one_round(application, path: str, raw: bytes, raw_key: str, step: int) -> tuple[bool, list[dict]]:
    """Run one request whose client leaves after `step` turns of the loop, as a server tells an
    application (`http.disconnect`); (completed before that, messages sent)."""
    sent: list[dict] = []
    delivered = False
    left = asyncio.Event()

    async def receive() -> dict:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    task = asyncio.ensure_future(application(_scope(path, raw, raw_key), receive, send))
    for _ in range(step):
        if task.done():
            break
        await asyncio.sleep(0)
    completed = task.done()
    left.set()
    await asyncio.wait_for(task, timeout=30)
    return completed, sent


async def _quiet() -> None:
    """A settlement that outlives its cancelled task is awaited by the handler before it returns;
    give anything scheduled beside it (a lost reservation's release) a few turns."""
    for _ in range(3):
        await asyncio.sleep(0)


def _rounds(path: str, body: dict, raw_key: str, user) -> int:
    from dosportal.asgi import application
    from dosportal.v1 import holds, pool, settler, store

    raw = json.dumps(body).encode()
    rounds = 0

    async def run() -> int:
        nonlocal rounds
        try:
            for step in range(MAX_STEPS):
                completed, sent = await _one_round(application, path, raw, raw_key, step)
                await _quiet()
                rounds += 1
                await asyncio.to_thread(_assert_nothing_held, user, step)
                if completed:
                    assert sent[0]["status"] == 200, sent[0]
                    return step
            raise AssertionError(f"the call did not complete within {MAX_STEPS} steps")
        finally:
            keeper = holds.existing_keeper()
            if keeper is not None:
                await keeper.close()
            running = settler.existing_settler()
            if running is not None:
                await running.close()
            await store.close_store()
            await pool.close_clients()

    return asyncio.run(run())


def _assert_nothing_held(user, step: int) -> None:
    try:
        _check_nothing_held(user, step)
    finally:
        connections.close_all()  # this runs in a worker thread: its connection ends with it


def _check_nothing_held(user, step: int) -> None:
    assert list(CreditHold.objects.values_list("request_id", flat=True)) == [], f"a hold is left at step {step}"
    account = CreditAccount.objects.get(user=user)
    assert account.held_micros == 0, f"credit still held at step {step}"
    assert account.balance_micros == ledger_sum_micros(user=user)
    client = redis.Redis.from_url(settings.REDIS_URL)
    in_flight = sum(client.zcard(key) for key in client.keys("dosportal:rl:*:inflight"))
    client.close()
    assert in_flight == 0, f"a concurrency slot is left at step {step}"


@pytest.fixture
def capped_key(api_user, served_models, exacting_upstream, settings):
    from accounts.services import account_set_limits
    from apikeys.services import api_key_create, api_key_update

    settings.DOS_AI_UPSTREAM_URL = exacting_upstream.url
    account_set_limits(user=api_user, requests_per_minute=1_000_000, tokens_per_minute=1_000_000_000)
    api_key, raw_key = api_key_create(owner=api_user, name="capped")
    api_key_update(api_key=api_key, max_concurrency=1)
    return raw_key


@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
def test_a_chat_call_cancelled_at_any_await_holds_nothing(capped_key, api_user, exacting_upstream, stream):
    exacting_upstream.words = 3
    body = {"model": "dos-ai", "max_tokens": 5, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}

    steps = _rounds("/v1/chat/completions", body, capped_key, api_user)

    assert steps > 10  # the call has that many turns of the loop: each was a cancellation point
    # Each round was recorded at most once: served (charged before the answer left, so a client
    # that leaves while it is sent still pays for it) or left before anything was delivered.
    records = UsageRecord.objects.filter(user=api_user)
    assert records.count() <= steps + 1
    assert set(records.values_list("status_code", flat=True)) <= {200, 499}
    assert records.filter(status_code=200).exists()
    assert not records.filter(status_code=499).exclude(cost_micros=0).exists() if not stream else True


def test_a_malformed_answer_cancelled_or_not_holds_nothing(capped_key, api_user, exacting_upstream):
    exacting_upstream.mode = "malformed"
    body = {"model": "dos-ai", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}

    with pytest.raises(AssertionError, match="'status': 502"):
        _rounds("/v1/chat/completions", body, capped_key, api_user)

    records = UsageRecord.objects.filter(user=api_user)
    assert records.filter(status_code=502, cost_micros=0).exists()
    assert set(records.values_list("status_code", "cost_micros")) <= {(502, 0), (499, 0)}
