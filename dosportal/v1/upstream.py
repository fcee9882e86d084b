"""The client side of the inference server: one shared httpx.AsyncClient per process.

Errors are mapped here to the API's own errors, so the gateway only ever sees
an `ApiError` before a response starts, and `UpstreamStreamError` inside one.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

import httpx
from django.conf import settings

from dosportal.v1 import errors
from dosportal.v1.errors import ApiError

logger = logging.getLogger(__name__)


class UpstreamStreamError(Exception):
    """The upstream failed after the stream had started."""

    def __init__(self, api_error: ApiError):
        super().__init__(api_error.message)
        self.api_error = api_error


class UpstreamStream(Protocol):
    def events(self) -> AsyncIterator[bytes]:
        """The `data:` payloads of the SSE stream, without the final [DONE]."""
        ...

    async def aclose(self) -> None: ...


class Upstream(Protocol):
    async def request(self, path: str, body: dict[str, Any]) -> dict[str, Any]: ...

    async def open_stream(self, path: str, body: dict[str, Any]) -> UpstreamStream: ...


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
        return ApiError(
            status,
            message or f"The inference server rejected the request (HTTP {status}).",
            "invalid_request_error",
            code or "upstream_rejected",
        )
    if status in (408,):
        return errors.upstream_timeout(retryable=True)
    logger.warning("upstream answered HTTP %s: %s", status, message[:200])
    return errors.upstream_unavailable(retryable=status >= 500 or status == 429)


def _event_data(event: bytes) -> bytes | None:
    """The joined `data:` lines of one event; comments and other fields carry nothing the API uses."""
    lines = [
        line[6:] if line.startswith(b"data: ") else line[5:] for line in event.split(b"\n") if line.startswith(b"data:")
    ]
    return b"\n".join(lines) if lines else None


class HttpStream:
    def __init__(self, response: httpx.Response):
        self.response = response

    async def events(self) -> AsyncIterator[bytes]:
        """Server-sent events parsed on bytes (no text decoding per line: this runs per chunk)."""
        buffer = b""
        try:
            async for piece in self.response.aiter_bytes():
                buffer += piece
                if b"\r" in buffer:
                    if buffer.endswith(b"\r"):
                        continue  # a CRLF split across pieces: wait for its LF
                    buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
                while (end := buffer.find(b"\n\n")) != -1:
                    event, buffer = buffer[:end], buffer[end + 2 :]
                    payload = _event_data(event)
                    if payload is None:
                        continue
                    if payload.strip() == b"[DONE]":
                        return
                    yield payload
            payload = _event_data(buffer)
            if payload is not None and payload.strip() != b"[DONE]":
                yield payload
        except httpx.TimeoutException as error:
            raise UpstreamStreamError(errors.upstream_timeout()) from error
        except httpx.HTTPError as error:
            raise UpstreamStreamError(errors.upstream_unavailable()) from error

    async def aclose(self) -> None:
        # Closing the response closes its connection: the upstream sees the disconnect
        # and stops generating for a client that went away.
        await self.response.aclose()


@contextlib.contextmanager
def _connection_errors() -> Iterator[None]:
    """Until the response starts: timeouts are 504, anything else on the wire 502 — both worth
    another endpoint's try (dosportal.v1.pool)."""
    try:
        yield
    except httpx.TimeoutException as error:
        raise errors.upstream_timeout(retryable=True) from error
    except httpx.HTTPError as error:
        logger.warning("upstream unreachable: %r", error)
        raise errors.upstream_unavailable(retryable=True) from error


class HttpUpstream:
    def __init__(
        self,
        base_url: str,
        api_key: str = "",
        *,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int,
        max_keepalive: int,
    ):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout, pool=max(connect_timeout, 30.0)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_keepalive),
        )

    def _timeout(self, seconds: float | None) -> httpx.Timeout | None:
        """This attempt's timeout: the client's, cut to what is left of the call's deadline."""
        if seconds is None:
            return None
        default = self.client.timeout
        read = min(default.read or seconds, seconds)
        return httpx.Timeout(read, connect=min(default.connect or seconds, seconds), pool=default.pool)

    async def request(self, path: str, body: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        with _connection_errors():
            response = await self.client.post(path, json=body, timeout=self._timeout(timeout))
        if response.status_code >= 400:
            raise map_upstream_status(response.status_code, response.content)
        try:
            payload = response.json()
        except ValueError as error:
            raise errors.upstream_unavailable("The inference server sent a response that is not JSON.") from error
        if not isinstance(payload, dict):
            raise errors.upstream_unavailable("The inference server sent an unexpected response.")
        return payload

    async def open_stream(self, path: str, body: dict[str, Any], *, timeout: float | None = None) -> HttpStream:
        request = self.client.build_request(
            "POST", path, json=body, headers={"Accept": "text/event-stream"}, timeout=self._timeout(timeout)
        )
        with _connection_errors():
            response = await self.client.send(request, stream=True)
        if response.status_code >= 400:
            try:
                content = await response.aread()
            except httpx.HTTPError:
                content = b""
            await response.aclose()
            raise map_upstream_status(response.status_code, content)
        # The time-out that bounded waiting for the headers must not bound the stream: from here
        # each read waits up to the client's own read time-out.
        response.request.extensions["timeout"] = self.client.timeout.as_dict()
        return HttpStream(response)

    async def probe(self, timeout: float) -> bool:
        """`GET {base}/models` answers 2xx: the server is up."""
        try:
            response = await self.client.get("models", timeout=timeout)
        except httpx.HTTPError:
            return False
        return response.status_code < 300


def http_upstream(base_url: str, api_key: str) -> HttpUpstream:
    return HttpUpstream(
        base_url,
        api_key,
        connect_timeout=settings.DOS_AI_UPSTREAM_CONNECT_TIMEOUT,
        read_timeout=settings.DOS_AI_UPSTREAM_TIMEOUT,
        max_connections=settings.DOS_AI_UPSTREAM_MAX_CONNECTIONS,
        max_keepalive=settings.DOS_AI_UPSTREAM_MAX_KEEPALIVE,
    )


def configured_urls() -> list[str]:
    """`DOS_AI_UPSTREAM_URL`: one base URL, or a comma-separated pool of them."""
    return [url.strip().rstrip("/") for url in settings.DOS_AI_UPSTREAM_URL.split(",") if url.strip()]


def is_development_model() -> bool:
    """The one place that decides: no upstream configured means the built-in development model
    (for models without endpoints of their own in the admin)."""
    return not configured_urls()
