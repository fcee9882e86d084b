"""The dashboard's answer to an exception no view handled (`handler500` in dosportal.urls).

A database that cannot be reached (PostgreSQL stopped, restarting, or out of connections)
is not a bug of the page: it answers 503 with `Retry-After` and a plain page of its own that
reads nothing from the database, instead of Django's 500. The exception can surface anywhere
in the request (the session lookup in a middleware, a view, a template), and only the
handler of uncaught exceptions sees all of those — a middleware sees only a finished 500
from the layers inside it. Any other exception is Django's usual 500.
(`/v1` answers its own 503 in the API's error shape: dosportal.v1.)
"""

from __future__ import annotations

import sys

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.template import loader
from django.views import defaults

RETRY_AFTER_SECONDS = 5


def database_is_unavailable(error: BaseException | None) -> bool:
    """`error`, or an exception it was raised from, means the database cannot be reached."""
    while error is not None:
        if isinstance(error, OperationalError | InterfaceError):
            return True
        error = error.__cause__ or error.__context__
    return False


def server_error(request: HttpRequest) -> HttpResponse:
    # Django calls the 500 handler while handling the exception (asgiref carries it into the
    # handler's thread under ASGI), so it is still the current one here.
    if not database_is_unavailable(sys.exc_info()[1]):
        return defaults.server_error(request)
    page = loader.render_to_string("503.html", {"static_url": settings.STATIC_URL})
    response = HttpResponse(page, status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
