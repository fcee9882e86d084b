"""The client side of the inference server: one aiohttp session per server and event loop.

Errors are mapped here to the API's own errors, so the gateway only ever sees
an `ApiError` before a response starts, and `UpstreamStreamError` inside one.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

import aiohttp
from django.conf import settings

from dosportal.v1 import errors
from dosportal.v1.errors import ApiError

logger = logging.getLogger(__name__)

# A server-sent event longer than this is not an answer but a fault (or an attack): the stream
# is cut with an error rather than buffered without bound. A Responses API `response.completed`
# event repeats the whole output, so this is generous.
MAX_EVENT_BYTES = 16 * 2**20


class UpstreamStreamError(Exception):
    """The upstream failed after the stream had started."""

    def __init__(self, api_error: ApiError):
        super().__init__(api_error.message)
        self.api_error = api_error


class AnsweredWithError(ApiError):
    """A 5xx answer that is not an overload answer (500, 501, 505…): the server is up and
    answered, and the request itself may have provoked the error. dosportal.v1.pool counts it
    against the endpoint's health only under its rule for such answers; an unreachable server,
    a time-out and an overload answer (429, 502, 503, 504) are plain retryable `ApiError`s that
    always count."""


class UpstreamStream(Protocol):
    def batches(self) -> AsyncIterator[list[bytes]]:
        """The `data:` payloads of the SSE stream, without the final [DONE], in the groups in
        which they arrived: under load several events wait in one read, and the gateway then
        relays them in one write (one pass through the response machinery, one syscall)."""
        ...

    async def aclose(self) -> None: ...


class Upstream(Protocol):
    async def request(self, path: str, body: dict[str, Any]) -> dict[str, Any]: ...

    async def open_stream(self, path: str, body: dict[str, Any]) -> UpstreamStream: ...


# "Busy, come back later" (429, 503) and a proxy in front of the server saying it is gone (502, 504).
OVERLOAD_STATUSES = frozenset({429, 502, 503, 504})


def map_upstream_status(status: int, content: bytes) -> ApiError:
    """Upstream client errors (context too long…) reach the caller with their message;
    the upstream's own auth failures, overload and crashes are ours: 502."""
    message, code = "", ""
    try:
        payload = json.loads(content)
        error = payload.get("error", payload) if isinstance(payload, dict) else {}
        if isinstance(error, dict):
            message = str(error.get("message") or "")
            code = str(error.get("code") or "")
        elif isinstance(error, str):
            message = error
    except (ValueError, UnicodeDecodeError):
        pass
    if 400 <= status < 500 and status not in (401, 403, 407, 408, 429):
        return errors.upstream_rejected(status, message, code)
    if status in (408,):
        return errors.upstream_timeout(retryable=True)
    logger.warning("upstream answered HTTP %s: %s", status, message[:200])
    if status >= 500 and status not in OVERLOAD_STATUSES:
        plain = errors.upstream_unavailable()
        return AnsweredWithError(plain.status, plain.message, plain.type, plain.code, retryable=True)
    return errors.upstream_unavailable(retryable=status >= 500 or status == 429)


def _event_data(event: bytes) -> bytes | None:
    """The joined `data:` lines of one event; comments and other fields carry nothing the API uses."""
    lines = [
        line[6:] if line.startswith(b"data: ") else line[5:] for line in event.split(b"\n") if line.startswith(b"data:")
    ]
    return b"\n".join(lines) if lines else None


class HttpStream:
    def __init__(self, response: aiohttp.ClientResponse):
        self.response = response

    async def batches(self) -> AsyncIterator[list[bytes]]:
        """Server-sent events parsed on bytes (no text decoding per line: this runs per chunk)."""
        buffer = b""
        try:
            async for piece in self.response.content.iter_any():
                buffer += piece
                if b"\r" in buffer:
                    if buffer.endswith(b"\r"):
                        continue  # a CRLF split across pieces: wait for its LF
                    buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
                batch: list[bytes] = []
                while (end := buffer.find(b"\n\n")) != -1:
                    event, buffer = buffer[:end], buffer[end + 2 :]
                    payload = _event_data(event)
                    if payload is None:
                        continue
                    if payload.strip() == b"[DONE]":
                        if batch:
                            yield batch
                        return
                    batch.append(payload)
                if batch:
                    yield batch
                if len(buffer) > MAX_EVENT_BYTES:
                    raise UpstreamStreamError(
                        errors.upstream_unavailable(
                            f"The inference server sent an event longer than {MAX_EVENT_BYTES // 2**20} MiB."
                        )
                    )
            payload = _event_data(buffer)
            if payload is not None and payload.strip() != b"[DONE]":
                yield [payload]
        except TimeoutError as error:
            raise UpstreamStreamError(errors.upstream_timeout()) from error
        except aiohttp.ClientError as error:
            raise UpstreamStreamError(errors.upstream_unavailable()) from error

    async def aclose(self) -> None:
        # Closing (not releasing) drops the connection: the upstream sees the disconnect and
        # stops generating for a client that went away. A stream read to its end was already
        # released to the pool by aiohttp, and closing it then is a no-op.
        self.response.close()


@contextlib.contextmanager
def _connection_errors() -> Iterator[None]:
    """Until the response starts: timeouts are 504, anything else on the wire 502 — both worth
    another endpoint's try (dosportal.v1.pool)."""
    try:
        yield
    except TimeoutError as error:  # aiohttp's time-outs are TimeoutErrors too
        raise errors.upstream_timeout(retryable=True) from error
    except aiohttp.ClientError as error:
        logger.warning("upstream unreachable: %r", error)
        raise errors.upstream_unavailable(retryable=True) from error


async def _read_at_most(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, or a 502 as soon as it is longer than `limit` (declared or read so far):
    an answer is never buffered without bound."""
    if (response.content_length or 0) > limit:
        raise _too_large(limit)
    pieces, size = [], 0
    async for piece in response.content.iter_chunked(2**16):
        size += len(piece)
        if size > limit:
            raise _too_large(limit)
        pieces.append(piece)
    return b"".join(pieces)


def _too_large(limit: int) -> ApiError:
    return errors.upstream_unavailable(f"The inference server sent an answer larger than {limit} bytes.")


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


class HttpUpstream:
    """One inference server, over one aiohttp session (its own keep-alive pool) per event loop.

    aiohttp rather than httpx: on this path the client's own cost is paid on every call, and
    httpx/httpcore spent about 1 ms of CPU per request at 32 in flight (its pool checks every
    connection on each request) against aiohttp's 0.06 ms (bench/README.md). No redirects are
    followed and no proxy settings are read from the environment: the upstream is ours.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str = "",
        *,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int,
        keepalive_seconds: float = 30.0,
        max_response_bytes: int = 256 * 2**20,
    ):
        self.base_url = base_url.rstrip("/") + "/"
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.pool_timeout = max(connect_timeout, 30.0)  # waiting for a free connection of the pool
        self.max_response_bytes = max_response_bytes
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=max_connections, limit_per_host=0, keepalive_timeout=keepalive_seconds
            ),
            timeout=self._timeout(None),
            auto_decompress=True,
            trust_env=False,
        )

    def _timeout(self, seconds: float | None) -> aiohttp.ClientTimeout:
        """This attempt's time-outs: the client's, cut to what is left of the call's deadline."""
        cut = (lambda value: min(value, seconds)) if seconds is not None else (lambda value: value)
        return aiohttp.ClientTimeout(
            total=None,
            connect=cut(self.pool_timeout),
            sock_connect=cut(self.connect_timeout),
            sock_read=cut(self.read_timeout),
        )

    def _url(self, path: str) -> str:
        return self.base_url + path.lstrip("/")

    async def request(self, path: str, body: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        with _connection_errors():
            async with self.session.post(
                self._url(path), data=_dumps(body), headers=self.headers, timeout=self._timeout(timeout),
                allow_redirects=False,
            ) as response:  # fmt: skip
                content = await _read_at_most(response, self.max_response_bytes)
        if response.status >= 400:
            raise map_upstream_status(response.status, content)
        try:
            payload = json.loads(content)
        except ValueError as error:
            raise errors.upstream_unavailable("The inference server sent a response that is not JSON.") from error
        if not isinstance(payload, dict):
            raise errors.upstream_unavailable("The inference server sent an unexpected response.")
        return payload

    async def open_stream(self, path: str, body: dict[str, Any], *, timeout: float | None = None) -> HttpStream:
        with _connection_errors():
            response = await self.session.post(
                self._url(path), data=_dumps(body), headers={**self.headers, "Accept": "text/event-stream"},
                timeout=self._timeout(timeout), allow_redirects=False,
            )  # fmt: skip
        if response.status >= 400:
            try:
                content = await _read_at_most(response, self.max_response_bytes)
            except (aiohttp.ClientError, TimeoutError, ApiError):
                content = b""
            response.close()
            raise map_upstream_status(response.status, content)
        # The time-out that bounded waiting for the headers must not bound the stream: from here
        # each read waits up to the client's own read time-out.
        if response.connection is not None and response.connection.protocol is not None:
            response.connection.protocol.read_timeout = self.read_timeout
        return HttpStream(response)

    async def probe(self, timeout: float) -> bool:
        """`GET {base}/models` answers 2xx: the server is up."""
        try:
            async with self.session.get(
                self._url("models"), headers=self.headers, timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as response:  # fmt: skip
                return response.status < 300
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def aclose(self) -> None:
        await self.session.close()


def http_upstream(base_url: str, api_key: str) -> HttpUpstream:
    return HttpUpstream(
        base_url,
        api_key,
        connect_timeout=settings.DOS_AI_UPSTREAM_CONNECT_TIMEOUT,
        read_timeout=settings.DOS_AI_UPSTREAM_TIMEOUT,
        max_connections=settings.DOS_AI_UPSTREAM_MAX_CONNECTIONS,
        keepalive_seconds=settings.DOS_AI_UPSTREAM_KEEPALIVE_SECONDS,
        max_response_bytes=settings.DOS_AI_UPSTREAM_MAX_RESPONSE_BYTES,
    )


def configured_urls() -> list[str]:
    """`DOS_AI_UPSTREAM_URL`: one base URL, or a comma-separated pool of them."""
    return [url.strip().rstrip("/") for url in settings.DOS_AI_UPSTREAM_URL.split(",") if url.strip()]


def is_development_model() -> bool:
    """The one place that decides: no upstream configured means the built-in development model
    (for models without endpoints of their own in the admin)."""
    return not configured_urls()
