"""Brute-force protection for the sign-in, sign-up and password-reset forms.

django-ratelimit counts POSTs per client IP and per submitted email (lower-cased),
each against the same rate. Over either limit the user gets HTTP 429 with a
`Retry-After` header and a page that says when to try again, rather than the
library's bare 403. Behind a proxy, set RATELIMIT_IP_META_KEY so the IP is the
client's, not the proxy's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django_ratelimit.core import get_usage

View = Callable[..., HttpResponse]


def _submitted_email(request: HttpRequest) -> str:
    return request.POST.get("email", request.POST.get("username", "")).strip().lower()


def throttle(group: str, rate_setting: str) -> Callable[[View], View]:
    def decorator(view: View) -> View:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
            if request.method == "POST":
                rate = getattr(settings, rate_setting)
                keys: list[object] = ["ip"]
                email = _submitted_email(request)
                # A blank email is not an account: counting it would make every empty
                # submission, from anyone, share one counter and lock each other out.
                # The prefix keeps a submitted "email" of 10.0.0.1 from spending that IP's counter.
                if email:
                    keys.append(lambda group, request: f"email:{email}")
                waits = []
                for key in keys:
                    usage = get_usage(request, group=group, key=key, rate=rate, method="POST", increment=True)
                    if usage and usage["should_limit"]:
                        waits.append(max(1, usage["time_left"]))
                if waits:
                    retry_after = max(waits)
                    response = render(request, "accounts/throttled.html", {"retry_after": retry_after}, status=429)
                    response["Retry-After"] = str(retry_after)
                    return response
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
