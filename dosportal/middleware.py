from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase
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
