"""The limiter itself: RedisLimiter against the real test Redis, MemoryLimiter, and their helpers.

Both limiters run the same algorithm, so most tests run against each. Times
the limiter reports (retry, reset) are checked against bounds computed from the
moments the test sent each call and got its answer: the server's clock read the
time somewhere in between, so the exact value must lie inside them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis
from asgiref.sync import async_to_sync
from django.conf import settings

from dosportal.testing.limiters import Limiter, redis_url
from dosportal.v1 import ratelimit
from dosportal.v1.ratelimit import Decision, MemoryLimiter, RedisLimiter, format_duration

SLACK_MS = 2  # the limiters' clocks count whole milliseconds


@pytest.fixture
async def redis_limiter() -> AsyncIterator[Callable[[float], RedisLimiter]]:
    made: list[RedisLimiter] = []

    def make(window_seconds: float) -> RedisLimiter:
        made.append(RedisLimiter(redis_url(), window_seconds))
        return made[-1]

    yield make
    for limiter in made:
        await limiter.redis.aclose()


class Timed:
    """One call and the local moments (ms) it was sent and answered."""

    def __init__(self, decision: Decision, sent: float, answered: float):
        self.decision, self.sent, self.answered = decision, sent, answered


async def timed(call: Awaitable[Decision]) -> Timed:
    sent = time.monotonic() * 1000
    decision = await call
    return Timed(decision, sent, time.monotonic() * 1000)


def expires_after(entry: Timed, now: Timed, window_ms: int) -> range:
    """The possible values of `entry's time + window - now's time`, with clock-granularity slack."""
    low = window_ms - (now.answered - entry.sent)
    high = window_ms - (now.sent - entry.answered)
    return range(int(low) - SLACK_MS, int(high) + SLACK_MS + 1)


# --- requests per minute -----------------------------------------------------------


async def test_the_limit_is_admitted_exactly_and_the_next_is_refused_until_the_oldest_expires(make_limiter):
    limiter = make_limiter(2.0)

    calls = [await timed(limiter.admit(1, rpm=3, tpm=1000, cost=10)) for _ in range(4)]

    admitted = [call.decision for call in calls[:3]]
    refused = calls[3].decision
    assert [d.admitted for d in admitted] == [True, True, True]
    assert [d.remaining_requests for d in admitted] == [2, 1, 0]
    assert [d.remaining_tokens for d in admitted] == [990, 980, 970]
    assert [d.reset_requests_ms for d in admitted] == [2000, 2000, 2000]
    assert all(d.entry for d in admitted)
    assert refused.admitted is False
    assert refused.refused_by == "requests"
    assert (refused.limit_requests, refused.remaining_requests) == (3, 0)
    assert (refused.limit_tokens, refused.remaining_tokens) == (1000, 970)
    assert refused.entry == ""
    # The 4th fits when the 1st leaves the window; the window is full again when the 3rd leaves.
    assert refused.retry_after_ms in expires_after(calls[0], calls[3], 2000)
    assert refused.retry_after_ms > 0
    assert refused.reset_requests_ms in expires_after(calls[2], calls[3], 2000)
    assert refused.retry_after_seconds == 2  # ceil of (2000 ms minus a few ms)


async def test_after_the_oldest_entry_slides_out_one_more_request_is_admitted(make_limiter):
    limiter = make_limiter(0.4)
    first = await timed(limiter.admit(1, rpm=2, tpm=1000, cost=1))
    await asyncio.sleep(0.2)
    second = await timed(limiter.admit(1, rpm=2, tpm=1000, cost=1))
    refused = await timed(limiter.admit(1, rpm=2, tpm=1000, cost=1))
    assert refused.decision.admitted is False
    assert refused.decision.retry_after_ms in expires_after(first, refused, 400)

    await asyncio.sleep(refused.decision.retry_after_ms / 1000 + 0.01)
    again = await timed(limiter.admit(1, rpm=2, tpm=1000, cost=1))
    refused_again = await timed(limiter.admit(1, rpm=2, tpm=1000, cost=1))

    assert again.decision.admitted is True
    assert again.decision.remaining_requests == 0  # the second is still in the window
    assert refused_again.decision.admitted is False
    assert refused_again.decision.retry_after_ms in expires_after(second, refused_again, 400)


async def test_a_lowered_limit_refuses_at_once_and_waits_for_enough_entries_to_leave(make_limiter):
    limiter = make_limiter(2.0)
    calls = []
    for _ in range(4):
        calls.append(await timed(limiter.admit(1, rpm=5, tpm=1000, cost=0)))
        await asyncio.sleep(0.05)

    refused = await timed(limiter.admit(1, rpm=2, tpm=1000, cost=0))

    assert refused.decision.admitted is False
    assert refused.decision.remaining_requests == -2  # 4 in a window of 2: used 4
    assert refused.decision.headers()["x-ratelimit-remaining-requests"] == "0"
    # Three entries must leave before one more fits under 2: the wait is the third's.
    assert refused.decision.retry_after_ms in expires_after(calls[2], refused, 2000)


async def test_keys_have_separate_windows(make_limiter):
    limiter = make_limiter(2.0)
    for _ in range(2):
        await limiter.admit(1, rpm=2, tpm=1000, cost=1)

    assert (await limiter.admit(1, rpm=2, tpm=1000, cost=1)).admitted is False
    other = await limiter.admit(2, rpm=2, tpm=1000, cost=1)
    assert (other.admitted, other.remaining_requests, other.remaining_tokens) == (True, 1, 999)


# --- tokens per minute -------------------------------------------------------------


async def test_tokens_fit_exactly_up_to_the_limit_and_one_more_is_refused(make_limiter):
    limiter = make_limiter(2.0)

    first = await limiter.admit(1, rpm=100, tpm=100, cost=60)
    second = await limiter.admit(1, rpm=100, tpm=100, cost=40)
    refused = await limiter.admit(1, rpm=100, tpm=100, cost=1)
    free = await limiter.admit(1, rpm=100, tpm=100, cost=0)

    assert (first.admitted, first.remaining_tokens) == (True, 40)
    assert (second.admitted, second.remaining_tokens) == (True, 0)
    assert (refused.admitted, refused.refused_by) == (False, "tokens")
    assert (refused.remaining_requests, refused.remaining_tokens) == (98, 0)
    assert (free.admitted, free.remaining_requests, free.remaining_tokens) == (True, 97, 0)


async def test_a_refused_request_consumes_neither_requests_nor_tokens(make_limiter):
    limiter = make_limiter(2.0)
    await limiter.admit(1, rpm=3, tpm=100, cost=90)
    for _ in range(5):
        refused = await limiter.admit(1, rpm=3, tpm=100, cost=20)
        assert (refused.admitted, refused.refused_by, refused.remaining_requests) == (False, "tokens", 2)

    admitted = await limiter.admit(1, rpm=3, tpm=100, cost=10)

    assert (admitted.admitted, admitted.remaining_requests, admitted.remaining_tokens) == (True, 1, 0)


async def test_token_retry_waits_for_the_first_entries_that_free_enough(make_limiter):
    limiter = make_limiter(2.0)
    first = await timed(limiter.admit(1, rpm=100, tpm=25, cost=10))
    await asyncio.sleep(0.3)
    second = await timed(limiter.admit(1, rpm=100, tpm=25, cost=10))

    needs_one = await timed(limiter.admit(1, rpm=100, tpm=25, cost=15))  # 20 + 15 - 25 = 10: the first frees it
    needs_two = await timed(limiter.admit(1, rpm=100, tpm=25, cost=25))  # needs 20: both must leave

    assert needs_one.decision.refused_by == "tokens"
    assert needs_one.decision.retry_after_ms in expires_after(first, needs_one, 2000)
    assert needs_two.decision.refused_by == "tokens"
    assert needs_two.decision.retry_after_ms in expires_after(second, needs_two, 2000)
    assert needs_two.decision.reset_tokens_ms in expires_after(second, needs_two, 2000)
    assert needs_two.decision.retry_after_seconds == 2


async def test_when_both_limits_refuse_the_wait_is_the_longer_one(make_limiter):
    limiter = make_limiter(2.0)
    await timed(limiter.admit(1, rpm=2, tpm=100, cost=0))
    await asyncio.sleep(0.3)
    heavy = await timed(limiter.admit(1, rpm=2, tpm=100, cost=90))

    refused = await timed(limiter.admit(1, rpm=2, tpm=100, cost=20))

    # RPM frees a slot when the first leaves; TPM only when the heavy second does.
    assert refused.decision.refused_by == "requests"
    assert refused.decision.retry_after_ms in expires_after(heavy, refused, 2000)


async def test_a_request_larger_than_the_token_limit_is_refused_without_consuming(make_limiter):
    limiter = make_limiter(2.0)

    refused = await limiter.admit(1, rpm=10, tpm=100, cost=101)
    admitted = await limiter.admit(1, rpm=10, tpm=100, cost=100)

    assert (refused.admitted, refused.refused_by, refused.retry_after_ms) == (False, "tokens_exceed_limit", 2000)
    assert (refused.remaining_requests, refused.remaining_tokens) == (10, 100)
    assert (admitted.admitted, admitted.remaining_requests, admitted.remaining_tokens) == (True, 9, 0)


async def test_tokens_of_expired_entries_are_given_back(make_limiter):
    limiter = make_limiter(0.2)
    await limiter.admit(1, rpm=10, tpm=100, cost=70)
    await asyncio.sleep(0.25)

    later = await limiter.admit(1, rpm=10, tpm=100, cost=80)

    assert (later.admitted, later.remaining_requests, later.remaining_tokens) == (True, 9, 20)


# --- release (a request admitted, then refused for credit) ------------------------


async def test_release_gives_back_the_request_and_its_tokens(make_limiter):
    limiter = make_limiter(2.0)
    kept = await limiter.admit(1, rpm=3, tpm=100, cost=30)
    released = await limiter.admit(1, rpm=3, tpm=100, cost=50)

    await limiter.release(1, released.entry)
    await limiter.release(1, released.entry)  # twice is harmless
    after = await limiter.admit(1, rpm=3, tpm=100, cost=70)

    assert kept.admitted and released.admitted
    assert (after.admitted, after.remaining_requests, after.remaining_tokens) == (True, 1, 0)


async def test_releasing_an_entry_that_already_expired_changes_nothing(make_limiter):
    limiter = make_limiter(0.2)
    old = await limiter.admit(1, rpm=10, tpm=100, cost=40)
    await asyncio.sleep(0.25)
    current = await limiter.admit(1, rpm=10, tpm=100, cost=30)

    await limiter.release(1, old.entry)
    after = await limiter.admit(1, rpm=10, tpm=100, cost=10)

    assert current.remaining_tokens == 70
    assert (after.remaining_requests, after.remaining_tokens) == (8, 60)


# --- Redis specifics ---------------------------------------------------------------


async def test_redis_keys_share_one_hash_slot_and_expire_with_the_window(redis_limiter):
    limiter = redis_limiter(2.0)
    await limiter.admit(7, rpm=10, tpm=100, cost=5)
    client = redis.Redis.from_url(redis_url())

    names = sorted(key.decode() for key in client.keys("dosportal:rl:*"))
    ttls = [client.pttl(name) for name in names]

    assert names == ["dosportal:rl:{7}:req", "dosportal:rl:{7}:sum", "dosportal:rl:{7}:tok"]
    assert all(0 < ttl <= 2000 for ttl in ttls)
    assert client.get("dosportal:rl:{7}:sum") == b"5"
    client.close()


async def test_redis_admits_exactly_the_limit_under_concurrency_from_many_clients(redis_limiter):
    """Five limiters with their own connection pools stand in for five processes, interleaving."""
    limiters = [redis_limiter(60.0) for _ in range(5)]

    async def process(limiter: RedisLimiter, key_id: int, rpm: int, tpm: int, cost: int) -> list[Decision]:
        return [await limiter.admit(key_id, rpm=rpm, tpm=tpm, cost=cost) for _ in range(40)]

    by_requests = [
        d for run in await asyncio.gather(*(process(lim, 1, 37, 1_000_000, 1) for lim in limiters)) for d in run
    ]
    by_tokens = [d for run in await asyncio.gather(*(process(lim, 2, 1000, 370, 10) for lim in limiters)) for d in run]

    assert len(by_requests) == len(by_tokens) == 200
    assert sum(d.admitted for d in by_requests) == 37
    assert {d.refused_by for d in by_requests if not d.admitted} == {"requests"}
    assert sum(d.admitted for d in by_tokens) == 37
    assert {d.refused_by for d in by_tokens if not d.admitted} == {"tokens"}
    final = await limiters[0].admit(2, rpm=1000, tpm=370, cost=0)
    assert (final.remaining_requests, final.remaining_tokens) == (1000 - 38, 0)


async def test_a_burst_larger_than_the_connection_pool_waits_for_connections_instead_of_failing(redis_limiter):
    """Regression: redis-py's default pool raised MaxConnectionsError past 100 calls in flight,
    and admit() turned that into fail-open: a burst went through without limits."""
    limiter = redis_limiter(60.0)

    decisions = await asyncio.gather(
        *(limiter.admit(1, rpm=37, tpm=1_000_000, cost=1) for _ in range(300)), return_exceptions=True
    )

    assert [d for d in decisions if not isinstance(d, Decision)] == []
    assert sum(d.admitted for d in decisions) == 37


async def test_an_unreachable_redis_raises_from_the_limiter_and_admit_fails_open_loudly(monkeypatch, caplog):
    unreachable = RedisLimiter("redis://127.0.0.1:1/0", 2.0)
    with pytest.raises(redis.exceptions.ConnectionError):
        await unreachable.admit(1, rpm=3, tpm=100, cost=1)
    await unreachable.redis.aclose()

    monkeypatch.setattr(settings, "REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(ratelimit._redis_limiters, "instances", {})
    with caplog.at_level(logging.ERROR, logger="dosportal.v1.ratelimit"):
        decision = await ratelimit.admit(1, rpm=3, tpm=100, cost=1)

    assert decision is None
    assert [record.levelno for record in caplog.records] == [logging.ERROR]
    assert "fail-open" in caplog.records[0].getMessage()
    await ratelimit.release(1, decision)  # nothing to release, and no error


async def test_one_event_loop_reuses_one_limiter():
    assert ratelimit.get_limiter() is ratelimit.get_limiter()
    assert isinstance(ratelimit.get_limiter(), RedisLimiter)


def test_short_lived_event_loops_do_not_pile_up_limiters_and_connections(monkeypatch):
    """A WSGI server (runserver) runs each async view in an event loop of its own.

    Regression: a limiter (and its Redis connection) was kept for every loop
    ever seen, i.e. one open Redis connection per request, for good.
    """
    monkeypatch.setattr(ratelimit._redis_limiters, "instances", {})
    made: list[weakref.ref] = []

    async def one_request() -> Decision | None:
        made.append(weakref.ref(ratelimit.get_limiter()))
        return await ratelimit.admit(1, rpm=100, tpm=1000, cost=1)

    decisions = [async_to_sync(one_request)() for _ in range(20)]
    gc.collect()

    assert [d.remaining_requests for d in decisions] == list(range(99, 79, -1))
    assert len(ratelimit._redis_limiters.instances) == 1
    assert sum(ref() is not None for ref in made) == 1  # the earlier ones (and their pools) are gone


def test_without_redis_the_limiter_is_one_in_process_memory_limiter(monkeypatch):
    monkeypatch.setattr(settings, "REDIS_URL", "")
    monkeypatch.setattr(ratelimit, "_memory_limiter", None)

    async def limiter() -> Limiter:
        return ratelimit.get_limiter()

    first, second = async_to_sync(limiter)(), async_to_sync(limiter)()

    assert isinstance(first, MemoryLimiter)
    assert first is second
    assert first.window_ms == int(settings.DOS_AI_RATE_WINDOW_SECONDS * 1000)


# --- Decision and the header format ------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0s"),
        (-5, "0s"),
        (1, "1ms"),
        (120, "120ms"),
        (999, "999ms"),
        (1000, "1s"),
        (1500, "1.5s"),
        (1999, "1.999s"),
        (6500, "6.5s"),
        (59_999, "59.999s"),
        (60_000, "1m0s"),
        (90_000, "1m30s"),
        (360_000, "6m0s"),
        (3_723_000, "1h2m3s"),
    ],
)
def test_format_duration_writes_resets_as_openai_does(ms, text):
    assert format_duration(ms) == text


@pytest.mark.parametrize(("ms", "seconds"), [(0, 1), (1, 1), (999, 1), (1000, 1), (1001, 2), (2000, 2), (59_001, 60)])
def test_retry_after_is_whole_seconds_rounded_up_and_never_zero(ms, seconds):
    decision = Decision(False, 3, 100, 0, 100, ms, ms, retry_after_ms=ms, refused_by="requests")

    assert decision.retry_after_seconds == seconds


def test_headers_are_the_six_openai_headers():
    decision = Decision(False, 3, 100, -2, -5, 120, 360_000, retry_after_ms=50, refused_by="requests")

    assert decision.headers() == {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-limit-tokens": "100",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-requests": "120ms",
        "x-ratelimit-reset-tokens": "6m0s",
    }
