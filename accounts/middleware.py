"""'Last seen' for the session list, written at most once every few minutes per session.

allauth's own tracking (USERSESSIONS_TRACK_ACTIVITY) writes the session row on every
request; here the time of the last write is kept in the session itself (already loaded),
so most requests cost nothing and one in SEEN_RESOLUTION costs one UPDATE and a session save.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from allauth.usersessions.models import UserSession
from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.decorators import sync_and_async_middleware

SEEN_RESOLUTION_SECONDS = 300
SEEN_SESSION_KEY = "dos_session_seen_at"


def mark_session_seen(request: HttpRequest) -> None:
    request.session[SEEN_SESSION_KEY] = time.time()


def _touch(request: HttpRequest) -> None:
    session = getattr(request, "session", None)
    user = getattr(request, "user", None)
    if session is None or not session.session_key or user is None or not user.is_authenticated:
        return
    if time.time() - session.get(SEEN_SESSION_KEY, 0) >= SEEN_RESOLUTION_SECONDS:
        UserSession.objects.filter(session_key=session.session_key, user=user).update(last_seen_at=timezone.now())
        mark_session_seen(request)


@sync_and_async_middleware
def SessionLastSeenMiddleware(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[[HttpRequest], HttpResponse]:
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponse:
            # /v1 carries no session: it pays nothing here, not even a thread hop.
            if settings.SESSION_COOKIE_NAME in request.COOKIES:
                await sync_to_async(_touch)(request)
            return await get_response(request)

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponse:
        _touch(request)
        return get_response(request)

    return middleware
