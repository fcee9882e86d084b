"""Django's Redis cache, failing open when Redis cannot be reached.

The default cache holds only what may be lost: the sign-in/sign-up/reset throttle
counters and allauth's short-lived state (its rate limits, used TOTP codes). When Redis
is down, each operation logs an ERROR and answers as an empty cache would — `add`
succeeds, `get` misses, writes are dropped — so the forms keep working without their
throttles instead of answering 500, exactly like the /v1 limiter's fail-open. Errors
other than Redis's own connection and timeout errors still raise.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from dosportal import redisclient

logger = logging.getLogger("dosportal.cache")

UNAVAILABLE = (RedisConnectionError, RedisTimeoutError)


def _failing_open(answer: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run the operation; on a Redis outage log it and return `answer(*args)` instead."""

    def decorator(operation: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(operation)
        def wrapper(self: FailOpenRedisCache, *args: Any, **kwargs: Any) -> Any:
            try:
                return operation(self, *args, **kwargs)
            except UNAVAILABLE as error:
                logger.error("cache fail-open: Redis unavailable during %s (%s)", operation.__name__, error)
                return answer(*args, **kwargs)

        return wrapper

    return decorator


def _default_of_get(key: str, default: Any = None, *args: Any, **kwargs: Any) -> Any:
    return default


def _incr_missing(key: str, delta: int = 1, *args: Any, **kwargs: Any) -> int:
    # As if the counter had just been created: callers that count attempts see the first one.
    return delta


class PortalRedisCacheClient(RedisCacheClient):
    """Django's client, its pool built by dosportal.redisclient (TLS CA file, Sentinel)."""

    def _get_connection_pool(self, write: bool) -> Any:
        index = self._get_connection_pool_index(write)
        if index not in self._pools:
            self._pools[index] = redisclient.sync_pool(self._servers[index], **self._pool_options)
        return self._pools[index]


class FailOpenRedisCache(RedisCache):
    def __init__(self, server: str, params: dict[str, Any]):
        super().__init__(server, params)
        self._class = PortalRedisCacheClient

    add = _failing_open(lambda *a, **k: True)(RedisCache.add)
    get = _failing_open(_default_of_get)(RedisCache.get)
    set = _failing_open(lambda *a, **k: None)(RedisCache.set)
    touch = _failing_open(lambda *a, **k: False)(RedisCache.touch)
    delete = _failing_open(lambda *a, **k: False)(RedisCache.delete)
    get_many = _failing_open(lambda *a, **k: {})(RedisCache.get_many)
    has_key = _failing_open(lambda *a, **k: False)(RedisCache.has_key)
    incr = _failing_open(_incr_missing)(RedisCache.incr)
    set_many = _failing_open(lambda *a, **k: [])(RedisCache.set_many)
    delete_many = _failing_open(lambda *a, **k: None)(RedisCache.delete_many)
    clear = _failing_open(lambda *a, **k: False)(RedisCache.clear)
