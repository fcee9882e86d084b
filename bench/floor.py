"""The floor of bench/gateway.py: a bare Django 5.2 async view, no middleware, no database.

    uvicorn bench.floor:application            (BENCH_UPSTREAM_URL=http://127.0.0.1:PORT/v1)

A request answers the fixed chat completion at once, with no I/O. A `"stream": true` request,
when BENCH_UPSTREAM_URL is set, is relayed from that upstream as it arrives (one aiohttp
session, the bytes passed through untouched): the least a Django gateway can do for a stream,
the floor of the streaming measurement.
"""

from __future__ import annotations

import os

from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-floor",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        DATABASES={},
    )
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "")

import aiohttp
from django.core.asgi import get_asgi_application
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path

from bench.fake_upstream import ANSWER

UPSTREAM = os.environ.get("BENCH_UPSTREAM_URL", "")
_session: aiohttp.ClientSession | None = None


async def relay(body: bytes) -> StreamingHttpResponse:
    global _session
    if _session is None:
        _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    response = await _session.post(
        f"{UPSTREAM}/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )

    async def parts():
        try:
            async for piece in response.content.iter_any():
                yield piece
        finally:
            response.close()

    return StreamingHttpResponse(parts(), content_type="text/event-stream")


async def view(request: HttpRequest, rest: str = "") -> HttpResponse:
    if UPSTREAM and b'"stream":true' in request.body:
        return await relay(request.body)
    return JsonResponse(ANSWER)


urlpatterns = [path("", view), path("<path:rest>", view)]
application = get_asgi_application()
