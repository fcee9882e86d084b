"""The second factor's code step, throttled per account and per client address.

After the password, allauth asks for a code: an authenticator (TOTP) code or a recovery code,
at sign-in (`/accounts/2fa/authenticate/`) and when confirming it's you
(`/accounts/2fa/reauthenticate/`). allauth's only limit on that step is its "login_failed"
rate, which this project switches off with the password form's (accounts/throttle.py does
those), so the forms here count code attempts themselves, independent of allauth's settings:

- per account, `DOS_AI_MFA_RATE` (5 per 15 minutes): bounds the guesses at one account, from
  however many addresses — with 3 codes valid at a time, about 0.15% a day for a thief who has
  the password (and every refusal is in the owner's security log);
- per client address, `DOS_AI_MFA_IP_RATE` (30 per 15 minutes; IPv6 per /64, as everywhere):
  bounds one address guessing at many accounts whose passwords it has.

Every code posted is counted *before* it is checked (one atomic INCR per counter), so parallel
guesses cannot slip past the count, and even the right code is refused while a counter is over.
A code that turns out right is given back to both counters: only wrong codes use the allowance.
Counters are checked account first and counting stops at the first refusal, so guesses refused
for one account do not also spend the allowance of everyone else behind the same address.

Over a limit: HTTP 429 with `Retry-After` (the end of the counting window) and a page saying so;
the first refusal of each window is written to the account's security log ("Two-factor codes
paused"). Counters live in the default cache (Redis in production). When Redis is down the cache
fails open — every operation logs an ERROR (dosportal/cache.py) and counts nothing — so the
step works, unthrottled, rather than locking everyone out.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

from allauth.core import context
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.mfa.base.forms import AuthenticateForm, ReauthenticateForm
from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.mfa_code import CodeFieldMixin
from accounts.models import SecurityEvent, User
from accounts.security import SecurityContext, security_event_record
from accounts.throttle import throttle_ip
from dosportal.env import parse_rate

# Room for a slow request after its window ends before the counter disappears.
_EXPIRY_MARGIN_SECONDS = 5


def _now() -> float:
    """The clock of the counting windows (tests move it)."""
    return time.time()


@dataclass(frozen=True)
class Counted:
    cache_key: str
    count: int
    limit: int
    seconds_left: int

    @property
    def over(self) -> bool:
        return self.count > self.limit


@dataclass
class CodeAttempt:
    """One code posted: the counters it was counted under, and the refusal if one is over."""

    counted: list[Counted] = field(default_factory=list)
    refusal: Counted | None = None

    def give_back(self) -> None:
        """The code was right: it does not use up anyone's allowance."""
        for counter in self.counted:
            with contextlib.suppress(ValueError):  # the window ended (the key expired) meanwhile
                cache.decr(counter.cache_key)


def _count(scope: str, value: str, rate: str) -> Counted:
    """INCR the counter of `value` in the current fixed window of `rate` (created at 0 if new)."""
    limit, period = parse_rate(rate)
    now = _now()
    window_start = int(now // period) * period
    cache_key = f"mfa-code:{scope}:{value}:{period}:{window_start}"
    timeout = period + _EXPIRY_MARGIN_SECONDS
    cache.add(cache_key, 0, timeout=timeout)
    try:
        count = cache.incr(cache_key)
    except ValueError:  # expired between add and incr
        cache.set(cache_key, 1, timeout=timeout)
        count = 1
    return Counted(cache_key, count, limit, max(1, int(window_start + period - now)))


def code_attempt_count(request: HttpRequest, user: User) -> CodeAttempt:
    """Count one code entry for `user` from this request's address; stop at the first counter over."""
    attempt = CodeAttempt()
    for scope, value, rate in (
        ("user", str(user.pk), settings.DOS_AI_MFA_RATE),
        ("ip", throttle_ip(request), settings.DOS_AI_MFA_IP_RATE),
    ):
        counted = _count(scope, value, rate)
        attempt.counted.append(counted)
        if counted.over:
            attempt.refusal = counted
            if counted.count == counted.limit + 1:  # once per window, not once per guess
                security_event_record(
                    user=user,
                    kind=SecurityEvent.Kind.SECOND_FACTOR_THROTTLED,
                    context=SecurityContext.from_request(request),
                    detail="too many codes for this account" if scope == "user" else "too many codes from this address",
                )
            break
    return attempt


def throttled_response(request: HttpRequest, refusal: Counted) -> HttpResponse:
    response = render(request, "mfa/throttled.html", {"retry_after": refusal.seconds_left}, status=429)
    response["Retry-After"] = str(refusal.seconds_left)
    return response


class ThrottledCodeMixin:
    """Counts the code before allauth checks it (`clean_code`); a refusal ends the request with 429
    (allauth's middleware answers an ImmediateHttpResponse)."""

    user: User

    def clean_code(self) -> str:
        request = context.request
        attempt = code_attempt_count(request, self.user)
        if attempt.refusal is not None:
            raise ImmediateHttpResponse(throttled_response(request, attempt.refusal))
        code = super().clean_code()  # type: ignore[misc] - allauth's form; raises on a wrong code
        attempt.give_back()
        return code


class ThrottledAuthenticateForm(CodeFieldMixin, ThrottledCodeMixin, AuthenticateForm):
    """The code at sign-in (MFA_FORMS["authenticate"])."""


class ThrottledReauthenticateForm(CodeFieldMixin, ThrottledCodeMixin, ReauthenticateForm):
    """The code when confirming it's you (MFA_FORMS["reauthenticate"])."""
