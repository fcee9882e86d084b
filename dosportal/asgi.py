"""ASGI entry point, the production one: `uvicorn dosportal.asgi:application --workers N`.

Requests are routed by path before any middleware runs:

- `/v1` (and anything that looks like it: `/V1/…`, `//v1/…`) goes to a Django handler
  with no middleware at all and the API's own URLconf, so every answer there is JSON in the
  API's error shape. A body over `DOS_AI_MAX_REQUEST_BYTES` is refused with 413 as soon
  as its size is known — from Content-Length, or the running total of a chunked body —
  without reading the rest.
- `/healthz` is answered here, before any Django handler (dosportal.health), and static
  files straight from WhiteNoise's index (dosportal.middleware.StaticFiles). A static path
  it does not know goes to a bare Django handler (its 404); under autorefresh (development)
  every static path goes to one with only WhiteNoise in front of it.
- Everything else (the dashboard, the admin) goes through the full middleware stack:
  sessions, CSRF, authentication, messages, clickjacking and security headers. Django reads
  a whole body (into a temporary file past FILE_UPLOAD_MAX_MEMORY_SIZE) before any middleware
  or view can refuse it — a CSRF failure included — so a body over
  `DOS_AI_MAX_DASHBOARD_BODY_BYTES` is refused here with a plain 413 page, like /v1's: at once
  when Content-Length declares it, or as soon as the running total of a chunked body passes it.

Lifespan: at shutdown each worker gives settlements that still wait for the database one
more try and closes its database pool (what is still waiting stays in its spool file).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import django
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.exception import convert_exception_to_response
from django.urls import get_resolver, set_script_prefix
from django.utils.functional import cached_property
from django.utils.module_loading import import_string

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dosportal.settings")
django.setup(set_prefix=False)

from django.conf import settings  # noqa: E402 - after setup
from django.core.asgi import get_asgi_application  # noqa: E402

from dosportal.health import asgi_healthz  # noqa: E402
from dosportal.middleware import StaticFiles  # noqa: E402
from webhooks import worker as webhooks_worker  # noqa: E402

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

API_PATH = re.compile(r"^/+v1(/|$)", re.IGNORECASE)


class LeanASGIHandler(ASGIHandler):
    """Django's ASGI handler with its own (short) middleware list and, optionally, URLconf."""

    def __init__(self, middleware: tuple[str, ...] = (), urlconf: str | None = None):
        self.middleware = middleware
        self.urlconf = urlconf
        super().__init__()

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        get_response = self._get_response_async
        if self.urlconf is not None:
            urlconf, inner = self.urlconf, get_response

            async def get_response(request: Any) -> Any:
                request.urlconf = urlconf
                return await inner(request)

        handler = convert_exception_to_response(get_response)
        for path in reversed(self.middleware):
            handler = convert_exception_to_response(import_string(path)(handler))
        self._middleware_chain = handler


class ApiASGIHandler(LeanASGIHandler):
    """The /v1 handler: Django's request cycle without its request signals.

    Django sends `request_started` through `sync_to_async`, which starts (and joins) a thread
    per request for receivers that only matter to views using Django's own database
    connections (`close_old_connections`, `reset_queries`). /v1 never does: on PostgreSQL it has
    its own async pool, and on SQLite each ORM step closes its connection itself
    (dosportal.v1.store). So this handler skips that signal and closes the response inline
    (its `request_finished` receivers find nothing open), and calls the view itself
    (`respond`). Otherwise this is Django 5.2's `ASGIHandler.handle`, disconnect handling
    included.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)
            error_response.close()
            return

        async def process_request(request: Any, send: Send) -> Any:
            response = await self.respond(request)
            with contextlib.suppress(asyncio.CancelledError):  # the client left during the send
                await self.send_response(response, send)
            return response

        tasks = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request(request, send)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # This handler itself was cancelled (a server shutting down past its grace period):
            # the request's own task is cancelled too, so it settles now rather than run on, orphaned.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            body_file.close()
            raise
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(asyncio.CancelledError):
            tasks[1].result().close()
        body_file.close()

    async def respond(self, request: Any) -> Any:
        """The view's answer, called directly: every /v1 view is async and answers every
        exception in the API's error shape itself (dosportal.v1.views.api_endpoint), so Django's
        handler chain has nothing to add — and its `log_response` would send every 4xx through
        a worker thread to log a line the gateway's own call log already carries. The hot
        paths are found by a dict lookup, the rest by the /v1 URLconf's resolver."""
        view = self.exact_paths.get(request.path_info)
        if view is not None:
            response = await view(request)
        else:
            match = self.resolver.resolve(request.path_info)
            response = await match.func(request, *match.args, **match.kwargs)
        response._resource_closers.append(request.close)
        return response

    @cached_property
    def resolver(self) -> Any:
        return get_resolver(self.urlconf)

    @cached_property
    def exact_paths(self) -> dict[str, Any]:
        """The /v1 URLconf's routes without parameters, by their full path."""
        from django.urls.resolvers import RoutePattern

        from dosportal.v1 import urls

        return {
            f"/v1/{route.pattern}": route.callback
            for route in urls.urlpatterns
            if isinstance(route.pattern, RoutePattern) and "<" not in str(route.pattern)
        }

    async def send_response(self, response: Any, send: Send) -> None:
        """A /v1 event stream's parts go out as they are, one ASGI message each (see
        dosportal.v1.gateway.EventStream); every other response as Django sends it."""
        parts = getattr(response, "parts", None)
        if parts is None:
            return await super().send_response(response, send)
        headers = [(name.encode("ascii"), value.encode("latin1")) for name, value in response.items()]
        try:
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            async with contextlib.aclosing(parts):  # the relay's clean-up runs here, in this task
                async for part in parts:
                    await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body"})
        finally:
            # A stream that never started (the client left before its headers went out) was
            # never settled by its relay: settle it here, for nothing.
            await response.abandon()
        return None


def _too_large_body() -> bytes:
    from dosportal.v1 import errors

    return errors.request_too_large(settings.DOS_AI_MAX_REQUEST_BYTES).response().content


async def _send_too_large(send: Send) -> None:
    import uuid

    body = _too_large_body()
    await _send_413(send, body, b"application/json", [(b"x-request-id", f"req_{uuid.uuid4().hex}".encode())])


async def _send_page_too_large(send: Send) -> None:
    limit = settings.DOS_AI_MAX_DASHBOARD_BODY_BYTES
    body = (
        '<!doctype html><html lang="en"><meta charset="utf-8"><title>Request too large</title>'
        f"<h1>Request too large</h1><p>This request's body is larger than the limit of {limit} bytes.</p>"
    ).encode()
    await _send_413(send, body, b"text/html; charset=utf-8", [(b"cache-control", b"no-store")])


async def _send_413(send: Send, body: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *extra]
    # The rest of the body is never read: the connection cannot carry another request.
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _declared_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0  # the server has refused a malformed one before it got here
    return 0


async def serve_bounded(
    app: Callable[[Scope, Receive, Send], Awaitable[None]],
    limit: int,
    refuse: Callable[[Send], Awaitable[None]],
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """`app`, with a body over `limit` bytes refused by `refuse` as soon as its size is known:
    from Content-Length before a byte is read, or as the running total of what arrives."""
    if _declared_length(scope) > limit:
        return await refuse(send)
    received = 0
    refused = False

    async def bounded_receive() -> Message:
        nonlocal received, refused
        if refused:
            return {"type": "http.disconnect"}
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                # Answer now and tell Django the client left: it stops reading and sends nothing.
                refused = True
                await refuse(send)
                return {"type": "http.disconnect"}
        return message

    return await app(scope, bounded_receive, send)


class Router:
    def __init__(self) -> None:
        self.site = get_asgi_application()
        self.api = ApiASGIHandler(urlconf="dosportal.v1.root_urls")
        self.static = StaticFiles()
        # Files WhiteNoise indexed at start-up are answered by `static`; a second index in a
        # middleware would only miss again. Under autorefresh (development) it looks them up.
        lookup = () if self.static.enabled else ("dosportal.middleware.AsyncWhiteNoiseMiddleware",)
        self.plain = LeanASGIHandler(middleware=lookup)
        self.static_prefix = settings.STATIC_URL

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if API_PATH.match(path):
                return await serve_bounded(
                    self.api, settings.DOS_AI_MAX_REQUEST_BYTES, _send_too_large, scope, receive, send
                )
            if path == "/healthz":
                return await asgi_healthz(scope, send)
            page_limit = settings.DOS_AI_MAX_DASHBOARD_BODY_BYTES
            if path.startswith(self.static_prefix):
                if await self.static.serve(scope, send):
                    return None
                return await serve_bounded(self.plain, page_limit, _send_page_too_large, scope, receive, send)
            return await serve_bounded(self.site, page_limit, _send_page_too_large, scope, receive, send)
        if scope["type"] == "lifespan":
            return await self.lifespan(receive, send)
        return await self.site(scope, receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                from dosportal.v1.holds import get_keeper
                from dosportal.v1.settler import get_settler

                # Settlements a dead worker left in its spool are written by the next one to
                # start, whether or not any call reaches it; so are the holds it left.
                get_settler().adopt()
                get_keeper().start()
                webhooks_worker.start()  # this process's share of webhook delivery
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                from dosportal.v1 import holds, pool, settler, store

                keeper = holds.existing_keeper()
                if keeper is not None:
                    await keeper.close()
                await webhooks_worker.stop()
                running = settler.existing_settler()
                if running is not None:
                    await running.close()
                await store.close_store()
                await pool.close_clients()
                await send({"type": "lifespan.shutdown.complete"})
                return


application = Router()
