"""The /v1 rate limiters under test: one of each kind (Redis, process memory) from one fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from django.conf import settings

from dosportal.v1.ratelimit import MemoryLimiter, RedisLimiter

Limiter = RedisLimiter | MemoryLimiter


def redis_url() -> str:
    if not settings.REDIS_URL:
        pytest.fail("the limiter tests need a real Redis: set REDIS_URL (make test does)")
    return settings.REDIS_URL


@pytest.fixture(params=["redis", "memory"])
async def make_limiter(request: pytest.FixtureRequest, settings) -> AsyncIterator[Callable[..., Limiter]]:
    """Makes limiters of one kind per run of the test (Redis, then memory), closed after it.
    `lease_seconds`, when given, is the lease of a concurrency slot (DOS_AI_CONCURRENCY_LEASE_SECONDS)."""
    made: list[Limiter] = []

    def make(window_seconds: float, *, lease_seconds: float | None = None) -> Limiter:
        if lease_seconds is not None:
            settings.DOS_AI_CONCURRENCY_LEASE_SECONDS = lease_seconds
        limiter = (
            RedisLimiter(redis_url(), window_seconds) if request.param == "redis" else MemoryLimiter(window_seconds)
        )
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        if isinstance(limiter, RedisLimiter):
            await limiter.redis.aclose()
