"""Several inference servers per model: choice, failover and health, per worker.

Where a model's servers come from: its active `UpstreamEndpoint` rows (admin), else every URL
of `DOS_AI_UPSTREAM_URL` (a comma-separated list), else the built-in development model.

- **Choice:** the healthy endpoint with the fewest requests in flight (in this worker) per unit
  of weight; ties go to the one used least recently.
- **Failover:** a connection error, a time-out, or a 5xx/429 answer *before the first byte
  reached the client* is retried once on another healthy endpoint, within the call's deadline
  (`DOS_AI_UPSTREAM_DEADLINE`). Once a stream has started it is never retried — the client
  would see a spliced answer. A retried call is settled once, for the answer delivered.
- **Health:** `DOS_AI_UPSTREAM_FAILURE_THRESHOLD` failures in a row take an endpoint out for a
  cooldown (5 s, doubling per failed trial up to 60 s); then a single request tries it (half-open):
  success puts it back, failure doubles the cooldown. With `DOS_AI_UPSTREAM_PROBE_SECONDS` set,
  each worker also probes `GET {base}/models` that often.
- **What counts as a failure** — one tenant must not be able to take the upstream away from the
  others by sending requests that make it fail:
  - always: the server cannot be reached, does not answer in time, or answers that it is
    overloaded or gone (429, 502, 503, 504) — whoever sent the request, the server is not serving;
  - never: a client error (4xx other than 429) is the request's fault: it counts as a success;
  - another 5xx (500, 501…; `upstream.AnsweredWithError`) is an answer the request itself may
    have provoked. It counts only when (a) the same request then succeeded on another endpoint
    (the request was fine, this endpoint was not), or (b) since the endpoint's last success, a
    different caller (account) also had such an answer from it within `FAULT_WINDOW` seconds.
    Otherwise it changes nothing: a poisoning account's own 500s, however many, neither take
    the endpoint out nor extend its cooldown, and every other account's successes go on.
- **Never no endpoint to try:** when every endpoint of a model is out, a call still tries the
  one whose cooldown ends first (without extending it when that fails) rather than answering
  502 untried: a breaker orders the endpoints, it never refuses a call by itself. The price is
  that while a model's only server is really down each call waits for its connection error.
- State changes are written to the shared cache, so the admin and `/healthz` see them; the
  decisions themselves use this worker's own view (no round trip on the hot path).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.conf import settings

from dosportal import metrics
from dosportal.v1 import errors
from dosportal.v1.errors import ApiError
from dosportal.v1.loops import PerEventLoop
from dosportal.v1.upstream import AnsweredWithError, HttpUpstream, UpstreamStream, http_upstream

logger = logging.getLogger(__name__)

T = TypeVar("T")
FIRST_COOLDOWN = 5.0
LAST_COOLDOWN = 60.0
FAULT_WINDOW = 60.0  # seconds: how long an error answer to one caller waits for another's to count
MAX_FAULTED_CALLERS = 1000  # bounded memory: the rule needs two callers, not all of them
HEALTH_CACHE_SECONDS = 300


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    base_url: str
    api_key: str = ""
    weight: int = 1


def health_cache_key(base_url: str) -> str:
    return "dosportal:upstream-health:" + hashlib.sha256(base_url.encode()).hexdigest()[:16]


@dataclass
class Endpoint:
    """One server as this worker sees it."""

    config: EndpointConfig
    in_flight: int = 0
    failures: int = 0  # in a row
    cooldown: float = 0.0
    down_until: float = 0.0  # 0: healthy
    trial: bool = False  # a half-open trial request is out
    last_used: float = 0.0
    # Callers (account ids) that had an error answer (AnsweredWithError) since the last success,
    # with when they last had one.
    faulted_by: dict[int | None, float] = field(default_factory=dict)
    label: str = field(init=False)

    def __post_init__(self) -> None:
        self.label = metrics.upstream_label(self.config.base_url)  # host:port/path, never credentials

    @property
    def healthy(self) -> bool:
        return not self.down_until

    def usable(self, now: float) -> bool:
        return not self.down_until or (now >= self.down_until and not self.trial)

    def state(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        if not self.down_until:
            return "healthy"
        return "trial" if now >= self.down_until else "cooling down"

    def succeeded(self) -> None:
        changed = bool(self.down_until)
        self.failures, self.cooldown, self.down_until, self.trial = 0, 0.0, 0.0, False
        if self.faulted_by:
            self.faulted_by.clear()
        if changed:
            logger.warning("upstream %s is healthy again", self.label)
            _publish(self)

    def failed(self) -> None:
        self.failures += 1
        was_trial, self.trial = self.trial, False
        if self.down_until and not was_trial:
            return  # tried while out (every endpoint was): it stays out, its cooldown unchanged
        if was_trial or self.failures >= settings.DOS_AI_UPSTREAM_FAILURE_THRESHOLD:
            self.cooldown = min(LAST_COOLDOWN, self.cooldown * 2 if self.cooldown else FIRST_COOLDOWN)
            self.down_until = time.monotonic() + self.cooldown
            logger.error(
                "upstream %s taken out for %.0f s after %d failures in a row", self.label, self.cooldown, self.failures
            )
            _publish(self)

    def answered_with_error(self, caller: int | None) -> bool:
        """An error answer the request may have provoked: counted as a failure (True) only when
        another caller also had one since the last success, within FAULT_WINDOW (rule (b))."""
        now = time.monotonic()
        recent = {c: at for c, at in self.faulted_by.items() if now - at < FAULT_WINDOW}
        recent.pop(caller, None)
        if len(recent) >= MAX_FAULTED_CALLERS:
            recent.pop(next(iter(recent)))
        recent[caller] = now
        self.faulted_by = recent
        if len(recent) >= 2:
            self.failed()
            return True
        self.trial = False  # the trial told nothing about the server: the next call may try it
        return False


# Health is per worker process (one view shared by its event loops); clients are per event loop.
_endpoints: dict[EndpointConfig, Endpoint] = {}
_clients: PerEventLoop[dict[EndpointConfig, HttpUpstream]] = PerEventLoop(dict)
_probe_state = {"last": 0.0}


def endpoint_for(config: EndpointConfig) -> Endpoint:
    found = _endpoints.get(config)
    if found is None:
        found = _endpoints[config] = Endpoint(config)
    return found


def client_for(config: EndpointConfig) -> HttpUpstream:
    clients = _clients.get()
    client = clients.get(config)
    if client is None:
        client = clients[config] = http_upstream(config.base_url, config.api_key)
    return client


async def close_clients() -> None:
    """At shutdown: this loop's upstream sessions close their connections."""
    clients = _clients.existing() or {}
    while clients:
        _, client = clients.popitem()
        await client.aclose()


def _publish(endpoint: Endpoint) -> None:
    """Tell the admin and /healthz (any worker) about a change, without waiting for it."""
    from django.core.cache import cache

    metrics.upstream_health(endpoint.label, endpoint.healthy)
    state = {"state": endpoint.state(), "failures": endpoint.failures, "cooldown": endpoint.cooldown, "at": time.time()}

    async def write() -> None:
        try:
            await cache.aset(health_cache_key(endpoint.config.base_url), state, HEALTH_CACHE_SECONDS)
        except Exception as error:  # noqa: BLE001 - health reporting must never break a call
            logger.debug("could not publish upstream health: %r", error)

    with contextlib.suppress(RuntimeError):  # no running loop (a sync caller): skip
        task = asyncio.get_running_loop().create_task(write())
        _background.add(task)
        task.add_done_callback(_background.discard)


_background: set[asyncio.Task[Any]] = set()


def choose(endpoints: list[Endpoint], exclude: list[Endpoint], *, force: bool = False) -> Endpoint | None:
    """The endpoint to try next; None when none is usable — unless `force` (the call's first
    try): then the one whose cooldown ends first, so a model is never left with nothing to try."""
    now = time.monotonic()
    usable = [e for e in endpoints if e not in exclude and e.usable(now)]
    if not usable:
        rest = [e for e in endpoints if e not in exclude]
        if not force or not rest:
            return None
        least_bad = min(rest, key=lambda e: (e.down_until, (e.in_flight + 1) / e.config.weight))
        least_bad.last_used = now
        return least_bad
    # Healthy ones first; a cooled-down one only gets its single trial when it is the pick.
    chosen = min(usable, key=lambda e: (not e.healthy, (e.in_flight + 1) / e.config.weight, e.last_used))
    if not chosen.healthy:
        chosen.trial = True
    chosen.last_used = now
    return chosen


class CountedStream:
    """A stream that counts as in flight on its endpoint until it is closed."""

    def __init__(self, stream: UpstreamStream, endpoint: Endpoint):
        self.stream = stream
        self.endpoint = endpoint
        self.open = True

    def batches(self) -> Any:
        return self.stream.batches()

    async def aclose(self) -> None:
        if self.open:
            self.open = False
            self.endpoint.in_flight -= 1
        await self.stream.aclose()


class PooledUpstream:
    """The Upstream interface over a model's endpoints, with failover before the first byte."""

    def __init__(self, configs: list[EndpointConfig], caller_id: int | None = None):
        self.endpoints = [endpoint_for(config) for config in configs]
        self.caller_id = caller_id  # the account calling: whose error answers these are
        _maybe_probe(self.endpoints)

    async def request(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        result, endpoint = await self._attempt(lambda client, timeout: client.request(path, body, timeout=timeout))
        endpoint.in_flight -= 1
        return result

    async def open_stream(self, path: str, body: dict[str, Any]) -> UpstreamStream:
        stream, endpoint = await self._attempt(lambda client, timeout: client.open_stream(path, body, timeout=timeout))
        return CountedStream(stream, endpoint)  # in flight until the stream is closed

    async def _attempt(self, operation: Callable[[HttpUpstream, float], Awaitable[T]]) -> tuple[T, Endpoint]:
        deadline = time.monotonic() + settings.DOS_AI_UPSTREAM_DEADLINE
        tried: list[Endpoint] = []
        unjudged: list[Endpoint] = []  # error answers not counted yet: rule (a) if a retry succeeds
        last_error: ApiError | None = None
        while len(tried) < 2:  # the first try and at most one retry
            remaining = deadline - time.monotonic()
            endpoint = choose(self.endpoints, tried, force=not tried) if remaining > 0 else None
            if endpoint is None:
                break
            tried.append(endpoint)
            endpoint.in_flight += 1
            started = time.monotonic()
            try:
                result = await operation(client_for(endpoint.config), remaining)
            except ApiError as error:
                endpoint.in_flight -= 1
                _observe(endpoint, ok=not error.retryable, seconds=time.monotonic() - started)
                if not error.retryable:
                    endpoint.succeeded()  # the server answered; the request was at fault
                    raise
                if not isinstance(error, AnsweredWithError):
                    endpoint.failed()
                elif not endpoint.answered_with_error(self.caller_id):
                    unjudged.append(endpoint)
                last_error = error
                logger.warning(
                    "upstream %s failed (%s); %s",
                    endpoint.label,
                    error.code,
                    "retrying" if len(tried) < 2 else "giving up",
                )
                continue
            except BaseException:
                endpoint.in_flight -= 1
                endpoint.trial = False
                raise
            _observe(endpoint, ok=True, seconds=time.monotonic() - started)
            endpoint.succeeded()
            for faulty in unjudged:  # the same request was fine here: the error was the endpoint's
                faulty.failed()
            return result, endpoint
        if last_error is not None:
            raise last_error
        raise errors.upstream_unavailable("No inference server for this model is available. Try again shortly.")


def _observe(endpoint: Endpoint, *, ok: bool, seconds: float) -> None:
    metrics.upstream_result(endpoint.label, ok, seconds)


def _maybe_probe(endpoints: list[Endpoint]) -> None:
    """With DOS_AI_UPSTREAM_PROBE_SECONDS: every so often, GET {base}/models on each endpoint."""
    interval = settings.DOS_AI_UPSTREAM_PROBE_SECONDS
    now = time.monotonic()
    if not interval or now - _probe_state["last"] < interval:
        return
    _probe_state["last"] = now

    async def probe_all() -> None:
        for endpoint in list(_endpoints.values()):
            if await client_for(endpoint.config).probe(timeout=settings.DOS_AI_UPSTREAM_CONNECT_TIMEOUT):
                endpoint.succeeded()
            else:
                endpoint.failures = max(endpoint.failures, settings.DOS_AI_UPSTREAM_FAILURE_THRESHOLD - 1)
                endpoint.failed()

    task = asyncio.get_running_loop().create_task(probe_all())
    _background.add(task)
    task.add_done_callback(_background.discard)


def health_of(base_url: str) -> dict[str, Any] | None:
    """What any worker last published about this endpoint (None: nothing wrong was seen)."""
    from django.core.cache import cache

    try:
        return cache.get(health_cache_key(base_url))
    except Exception:  # noqa: BLE001 - a cache outage must not break the admin or /healthz
        return None


async def upstream_for(model_id: int, caller_id: int | None = None) -> Any:
    """The upstream that serves this model: its endpoints, the configured URLs, or the dev model.
    `caller_id` (the calling account) tells one caller's error answers from another's."""
    from dosportal.v1.store import get_store
    from dosportal.v1.upstream import configured_urls

    rows = (await get_store().endpoints()).get(model_id)
    if rows:
        configs = [EndpointConfig(base_url, api_key, weight) for base_url, api_key, weight in rows]
    else:
        urls = configured_urls()
        if not urls:
            from dosportal.v1.devmodel import DevelopmentModel

            return DevelopmentModel(delay=settings.DOS_AI_DEV_MODEL_DELAY)
        configs = [EndpointConfig(url, settings.DOS_AI_UPSTREAM_API_KEY) for url in urls]
    return PooledUpstream(configs, caller_id)
