"""The floor of bench/gateway.py: a bare Django 5.2 async view, no middleware, no I/O.

uvicorn bench.floor:application
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

from django.core.asgi import get_asgi_application
from django.http import HttpRequest, JsonResponse
from django.urls import path

from bench.fake_upstream import ANSWER


async def view(request: HttpRequest, rest: str = "") -> JsonResponse:
    return JsonResponse(ANSWER)


urlpatterns = [path("", view), path("<path:rest>", view)]
application = get_asgi_application()
