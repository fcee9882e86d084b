"""Brute-force protection for the sign-in, sign-up and password-reset forms.

django-ratelimit counts POSTs under three keys, each with its own rate:

- the client IP (`dosportal.clientip`, so X-Forwarded-For only from trusted proxies;
  IPv6 counted per /64, which one host usually holds whole);
- the submitted email *from that IP* — tight, so one address cannot guess one account;
- the submitted email alone — loose (for sign-in), so a guess spread over many
  addresses is still slowed down; and it never holds back an address that signed in to
  that account before, so a stranger's wrong passwords cannot lock the owner out.

The email is read from the one field the form authenticates with (`email_field`), so
posting other fields alongside it changes nothing. Over any limit the user gets HTTP 429
with a `Retry-After` header and a page that says when to try again.

If Redis is down the cache fails open (dosportal/cache.py logs an ERROR for each
operation): the forms keep working, unthrottled, rather than answering 500.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django_ratelimit.core import get_usage

from dosportal.clientip import client_ip

View = Callable[..., HttpResponse]

KNOWN_ADDRESS_MAX_AGE = timedelta(days=90)


@dataclass(frozen=True)
class Throttle:
    group: str
    email_field: str
    rate_setting: str  # per IP and per (email, IP)
    email_rate_setting: str  # per email, from anywhere


LOGIN = Throttle("accounts.login", "login", "DOS_AI_LOGIN_RATE", "DOS_AI_LOGIN_EMAIL_RATE")
SIGNUP = Throttle("accounts.signup", "email", "DOS_AI_SIGNUP_RATE", "DOS_AI_SIGNUP_RATE")
PASSWORD_RESET = Throttle(
    "accounts.password_reset", "email", "DOS_AI_PASSWORD_RESET_RATE", "DOS_AI_PASSWORD_RESET_RATE"
)


def throttle_ip(request: HttpRequest) -> str:
    """The client address as counted: IPv4 whole, IPv6 by its /64."""
    address = client_ip(request)
    if ":" in address:
        return str(ipaddress.ip_network(f"{address}/64", strict=False).network_address) + "/64"
    return address


def _counters(request: HttpRequest, spec: Throttle) -> list[tuple[str, str]]:
    """(counter value, rate) pairs, tightest first. Values carry a prefix, so an "email" of
    10.0.0.1 is not that IP's counter."""
    ip = throttle_ip(request)
    rate = getattr(settings, spec.rate_setting)
    counters = [(ip, rate)]
    email = submitted_email(request, spec)
    # A blank email is not an account: counting it would make every empty submission,
    # from anyone, share one counter and lock each other out.
    if email:
        counters.append((f"email-ip:{email}|{ip}", rate))
        counters.append((f"email:{email}", getattr(settings, spec.email_rate_setting)))
    return counters


def submitted_email(request: HttpRequest, spec: Throttle) -> str:
    return request.POST.get(spec.email_field, "").strip().lower()


def _known_address_for(email: str, ip: str) -> bool:
    """This address has signed in to this account before (the owner's usual network)."""
    from accounts.models import SecurityEvent

    since = timezone.now() - KNOWN_ADDRESS_MAX_AGE
    return SecurityEvent.objects.filter(
        user__email__iexact=email, kind=SecurityEvent.Kind.SIGNED_IN, ip_address=ip, created_at__gte=since
    ).exists()


def throttled_response(request: HttpRequest, spec: Throttle) -> HttpResponse | None:
    """Count this POST; the 429 page if a counter is over its rate, else None.

    Counters are checked tightest first and counting stops at the first refusal, so
    attempts refused per IP do not also spend the email's allowance. The per-email counter
    does not hold back an address that signed in to the account before: a stranger who
    spends it cannot lock the owner out from the owner's usual network."""
    for value, rate in _counters(request, spec):
        usage = get_usage(
            request,
            group=spec.group,
            key=lambda group, request, value=value: value,
            rate=rate,
            method="POST",
            increment=True,
        )
        if not usage or not usage["should_limit"]:
            continue
        if value.startswith("email:") and _known_address_for(submitted_email(request, spec), client_ip(request)):
            continue
        retry_after = max(1, usage["time_left"])
        response = render(request, "accounts/throttled.html", {"retry_after": retry_after}, status=429)
        response["Retry-After"] = str(retry_after)
        return response
    return None


def throttle(spec: Throttle) -> Callable[[View], View]:
    def decorator(view: View) -> View:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
            if request.method == "POST" and (refused := throttled_response(request, spec)):
                return refused
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
