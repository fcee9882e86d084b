from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils.cache import add_never_cache_headers
from whitenoise.middleware import WhiteNoiseMiddleware


class AsyncWhiteNoiseMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise that does not force an async request through a thread.

    WhiteNoiseMiddleware is sync-only, so under ASGI Django would run it (and with
    it every dashboard request) through sync_to_async. This subclass is async-capable:
    paths outside STATIC_URL pass straight through; only static files take the
    thread hop, for WhiteNoise's file lookup and response. (`/v1` never reaches it:
    dosportal.asgi routes the API past every middleware.)
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[..., HttpResponseBase | Awaitable[HttpResponseBase]]) -> None:
        super().__init__(get_response)
        self.static_prefix = settings.STATIC_URL
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):  # type: ignore[override]
        if self.is_async:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        if request.path_info.startswith(self.static_prefix):
            response = await sync_to_async(self._serve_static, thread_sensitive=False)(request)
            if response is not None:
                return response
        return await self.get_response(request)

    def _serve_static(self, request: HttpRequest) -> HttpResponseBase | None:
        static_file = self.find_file(request.path_info) if self.autorefresh else self.files.get(request.path_info)
        if static_file is None:
            return None
        file_response = self.serve(static_file, request)
        # Read the (small, static) file here, in this worker thread, so the ASGI handler
        # gets plain bytes instead of iterating a sync file object through a thread hop
        # per chunk (which Django also warns about).
        response = HttpResponse(b"".join(file_response.streaming_content), status=file_response.status_code)
        file_response.close()
        for header, value in file_response.items():
            response[header] = value
        return response


class StaticFiles:
    """Static files as a bare ASGI answer: WhiteNoise's index and responses (conditional
    requests, Range, compressed variants, caching headers), sent from the event loop with no
    Django handler and no thread. The files are small and read whole; a path WhiteNoise does
    not know is left to Django (`serve` answers False).

    Only where WhiteNoise indexes the files once, at start-up (production, `DEBUG=0`); with
    autorefresh (development) static files keep going through `AsyncWhiteNoiseMiddleware`.
    """

    def __init__(self) -> None:
        self.enabled = not getattr(settings, "WHITENOISE_AUTOREFRESH", settings.DEBUG)
        self.files = WhiteNoiseMiddleware(get_response=None).files if self.enabled else {}

    async def serve(self, scope: dict, send: Callable[[dict], Awaitable[None]]) -> bool:
        static_file = self.files.get(scope["path"])
        if static_file is None:
            return False
        request_headers = {
            "HTTP_" + name.decode("latin-1").upper().replace("-", "_"): value.decode("latin-1")
            for name, value in scope["headers"]
        }
        response = static_file.get_response(scope["method"], request_headers)
        body = b""
        if response.file is not None:
            with response.file as file:
                body = file.read()
        headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in response.headers]
        await send({"type": "http.response.start", "status": int(response.status), "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return True


# Only our own files: no inline <script>, no inline style attributes, no eval, no CDN.
# htmx is configured not to need any of them (see the htmx-config <meta> in base.html).
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        # data: for the small SVG icons inlined in app.css; never for scripts.
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
# No page of ours uses a device or a payment sheet. The clipboard stays with our own pages
# (the copy buttons write to it; reading still needs the person's permission).
PERMISSIONS_POLICY = ", ".join(
    [
        "accelerometer=()",
        "camera=()",
        "geolocation=()",
        "gyroscope=()",
        "magnetometer=()",
        "microphone=()",
        "payment=()",
        "usb=()",
        "clipboard-read=(self)",
        "clipboard-write=(self)",
    ]
)


class SecurityHeadersMiddleware:
    """Content-Security-Policy and Permissions-Policy on every dashboard response, and
    `Cache-Control: no-store` on every page that does not choose its own caching.

    A static policy in a few lines rather than django-csp: no page needs a nonce (there is no
    inline script or style at all), so a per-request policy would be machinery without a use.
    `/v1` is a JSON API that browsers do not render: it is skipped, to keep its path short.

    no-store: every dashboard page is someone's own data (keys, usage, ledger, even the email
    in the top bar), and must not come back from the browser's cache or back/forward cache
    after sign-out or after a key was revoked. Static files are answered by WhiteNoise before
    this middleware and keep their long-lived caching.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[..., HttpResponseBase | Awaitable[HttpResponseBase]]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):  # type: ignore[no-untyped-def]
        if self.is_async:
            return self.__acall__(request)
        return self._add_headers(request, self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        return self._add_headers(request, await self.get_response(request))

    @staticmethod
    def _add_headers(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if request.path_info.startswith("/v1"):
            return response
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        if "Cache-Control" not in response.headers:
            add_never_cache_headers(response)
        return response
