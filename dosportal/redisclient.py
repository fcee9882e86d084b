"""Every Redis client of the portal, built from one set of settings.

The /v1 limiter (concurrency caps and the failed-key guard included: dosportal.v1.ratelimit)
takes an asyncio client from `async_client`; the cache (and so django-ratelimit's counters and
allauth's state: dosportal.cache) takes a connection pool from `sync_pool`. Three ways to reach
Redis, chosen by settings:

- `REDIS_URL=redis://host:port/db` — one server.
- `REDIS_URL=rediss://…` — one server over TLS (a managed endpoint); `REDIS_CA_FILE` names the
  CA bundle that signed its certificate (else the system's), and the name is always checked.
- `REDIS_SENTINELS=host:port,…` with `REDIS_SENTINEL_MASTER=<name>` — the primary that the
  sentinels currently name; after a failover every new connection goes to the new primary, and a
  connection to a demoted one is dropped on its first refused write. `REDIS_URL`, if also set,
  gives only the database number, the password and TLS (its host and port are not used);
  `REDIS_SENTINEL_PASSWORD` is the sentinels' own, if they have one.

While the sentinels have not yet promoted a replica, a call fails as with Redis down, and each
user of Redis does what it does then (the limiter fails open: README, "Scaling out").
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as asentinel
import redis.sentinel
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

SENTINEL_TIMEOUT = 1.0  # seconds to reach one sentinel and have its answer; the next one is tried after


def configured() -> bool:
    """Whether the portal has a shared Redis at all (else limits and cache are per process)."""
    return bool(settings.REDIS_URL or settings.REDIS_SENTINELS)


def parse_sentinels(entries: list[str]) -> list[tuple[str, int]]:
    """`host:port` entries (`[::1]:26379` for IPv6); ImproperlyConfigured on anything else."""
    sentinels = []
    for entry in entries:
        host, _, port = entry.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ImproperlyConfigured(f"REDIS_SENTINELS entries must be host:port, got {entry!r}")
        sentinels.append((host, int(port)))
    return sentinels


def check_url(url: str) -> None:
    if url and urlsplit(url).scheme not in {"redis", "rediss", "unix"}:
        raise ImproperlyConfigured(f"REDIS_URL must start with redis://, rediss:// or unix://, got {url!r}")


def _tls_options() -> dict[str, Any]:
    if settings.REDIS_CA_FILE:
        return {"ssl_ca_certs": settings.REDIS_CA_FILE}
    return {}


def _sentinel_connection_options() -> dict[str, Any]:
    """What REDIS_URL says about the primary's connections when sentinels find the primary."""
    if not settings.REDIS_URL:
        return {}
    parts = urlsplit(settings.REDIS_URL)
    options: dict[str, Any] = {}
    path = parts.path.strip("/")
    if path.isdigit():
        options["db"] = int(path)
    if parts.username:
        options["username"] = unquote(parts.username)
    if parts.password:
        options["password"] = unquote(parts.password)
    if parts.scheme == "rediss":
        options |= {"ssl": True, **_tls_options()}
    return options


def _sentinel_kwargs() -> dict[str, Any]:
    kwargs: dict[str, Any] = {"socket_timeout": SENTINEL_TIMEOUT, "socket_connect_timeout": SENTINEL_TIMEOUT}
    if settings.REDIS_SENTINEL_PASSWORD:
        kwargs["password"] = settings.REDIS_SENTINEL_PASSWORD
    return kwargs


class _BlockingSentinelPool(asentinel.SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel's pool (connections go to the primary the sentinels name) that waits for a free
    connection instead of raising past `max_connections`, as the limiter's pool must."""


def async_client(
    url: str, *, max_connections: int, socket_timeout: float, socket_connect_timeout: float
) -> aioredis.Redis:
    """An asyncio client for `url`'s server (or the sentinels' primary), whose pool makes a burst
    wait for a free connection, without time limit."""
    options = {"socket_timeout": socket_timeout, "socket_connect_timeout": socket_connect_timeout}
    if settings.REDIS_SENTINELS:
        sentinel = asentinel.Sentinel(parse_sentinels(settings.REDIS_SENTINELS), sentinel_kwargs=_sentinel_kwargs())
        return sentinel.master_for(
            settings.REDIS_SENTINEL_MASTER,
            connection_pool_class=_BlockingSentinelPool,
            max_connections=max_connections,
            timeout=None,
            **options,
            **_sentinel_connection_options(),
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=None, **options, **_tls_options()
    )
    return aioredis.Redis.from_pool(pool)


def sync_pool(url: str, **options: Any) -> redis.ConnectionPool:
    """The cache's pool: for REDIS_URL's server, or the primary the sentinels name."""
    if settings.REDIS_SENTINELS:
        sentinel = redis.sentinel.Sentinel(
            parse_sentinels(settings.REDIS_SENTINELS), sentinel_kwargs=_sentinel_kwargs()
        )
        client = sentinel.master_for(settings.REDIS_SENTINEL_MASTER, **options, **_sentinel_connection_options())
        return client.connection_pool
    return redis.ConnectionPool.from_url(url, **options, **_tls_options())


def sync_client(**options: Any) -> redis.Redis:
    """A plain client for scripts and commands (same rules as the cache's)."""
    return redis.Redis(connection_pool=sync_pool(settings.REDIS_URL, **options))
