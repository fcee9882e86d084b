"""Re-authentication ("confirm it's you") before sensitive steps.

A step is allowed when this session proved who it is — by signing in, or by confirming
the password or a second factor at /accounts/reauthenticate/ — within
ACCOUNT_REAUTHENTICATION_TIMEOUT seconds (5 minutes by default). allauth's own
`reauthentication_required` counts only explicit confirmations, which would ask for the
password again right after signing in; this counts the sign-in too. allauth's own
views (two-factor off, email change) keep allauth's stricter rule.
"""

from __future__ import annotations

import time

from allauth.account.internal.flows.login import get_authentication_records
from django.conf import settings
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import urlencode
from django_htmx.http import HttpResponseClientRedirect


def recently_authenticated(request: HttpRequest) -> bool:
    records = get_authentication_records(request, request.user)
    if not records:
        return False
    return time.time() - records[-1]["at"] < settings.ACCOUNT_REAUTHENTICATION_TIMEOUT


def reauthenticate_then(request: HttpRequest, next_path: str) -> HttpResponse:
    """Send the user to confirm it's them, and back to `next_path` afterwards."""
    url = f"{reverse('account_reauthenticate')}?{urlencode({REDIRECT_FIELD_NAME: next_path})}"
    if getattr(request, "htmx", False):
        return HttpResponseClientRedirect(url)
    return redirect(url)
