"""Project-level pages: the overview, which composes keys (apikeys) and credit (billing), and
the load balancer's health check."""

from __future__ import annotations

from django.db.models import F
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from accounts.services import account_has_verified_email
from apikeys.models import ApiKey
from billing import selectors
from dosportal import health
from dosportal.htmx import HtmxHttpRequest, login_required

# Keys listed on the overview, most recently used first; the keys page has them all.
OVERVIEW_KEYS = 3


@require_safe
@login_required
def overview(request: HtmxHttpRequest) -> HttpResponse:
    """Before any usage: the plan and how to make a first request. After: what was spent and by
    which key, and a warning while the credit would run out within a few days."""
    user = request.user
    active_keys = ApiKey.objects.filter(owner=user).active()
    context = {
        "plan": user.plan_info,
        "account": selectors.credit_account_for(user=user),
        "spend": selectors.spend_summary(user=user),
        "active_key_count": active_keys.count(),
        "recent_keys": list(
            active_keys.order_by(F("last_used_at").desc(nulls_last=True), "-created_at")[:OVERVIEW_KEYS]
        ),
        "low_balance_days": selectors.LOW_BALANCE_DAYS,
        "email_verified": account_has_verified_email(user),
    }
    return render(request, "overview.html", context)


@require_safe
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers under WSGI and the test client (dosportal.health; under
    ASGI, dosportal.asgi answers /healthz before any handler)."""
    database_ok = health.database_answers()
    status, body = health.answer(
        database_ok=database_ok,
        upstreams=health.upstream_health_recent() if database_ok else {},
        spool_ok=health.spool_writable_recent(),
    )
    return JsonResponse(body, status=status)
