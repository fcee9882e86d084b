"""Project-level pages: the overview, which composes keys (apikeys) and credit (billing), and
the load balancer's health check."""

from __future__ import annotations

import time
from typing import Any

from django.db import connection
from django.db.models import F
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_safe

from accounts.services import account_has_verified_email
from apikeys.models import ApiKey
from billing import selectors
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


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers: 200 when the database answers, 503 when it does not."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception:  # noqa: BLE001 - any database failure means "not healthy"
        return JsonResponse({"status": "error", "database": "unavailable"}, status=503)
    upstreams = _upstream_health_recent()
    if not upstreams:
        return JsonResponse({"status": "ok", "database": "ok"})
    unavailable = any(counts["healthy"] == 0 for counts in upstreams.values())
    return JsonResponse(
        {"status": "unavailable" if unavailable else "degraded", "database": "ok", "upstreams": upstreams},
        status=503 if unavailable else 200,
    )


# Load balancers poll /healthz often; the upstreams' health is read at most once a second per
# worker (it changes on the workers' own time scale of seconds), the database on every call.
UPSTREAM_HEALTH_SECONDS = 1.0
_upstream_health_memo: dict[str, Any] = {"at": -1e9, "value": {}}


def _upstream_health_recent() -> dict[str, dict[str, int]]:
    now = time.monotonic()
    if now - _upstream_health_memo["at"] >= UPSTREAM_HEALTH_SECONDS:
        _upstream_health_memo["value"], _upstream_health_memo["at"] = upstream_health(), now
    return _upstream_health_memo["value"]


def upstream_health() -> dict[str, dict[str, int]]:
    """Models with fewer healthy upstream endpoints than configured, as the workers last reported."""
    from billing.models import ServedModel, UpstreamEndpoint
    from dosportal.v1.pool import health_of
    from dosportal.v1.upstream import configured_urls

    rows: dict[int, list[str]] = {}
    for model_id, base_url in UpstreamEndpoint.objects.filter(is_active=True).values_list(
        "served_model_id", "base_url"
    ):
        rows.setdefault(model_id, []).append(base_url.rstrip("/"))
    shared = configured_urls()
    wrong: dict[str, dict[str, int]] = {}
    for model_id, name in ServedModel.objects.filter(is_active=True).values_list("id", "name"):
        urls = rows.get(model_id) or shared
        healthy = sum(1 for url in urls if (health_of(url) or {}).get("state", "healthy") == "healthy")
        if healthy < len(urls):
            wrong[name] = {"configured": len(urls), "healthy": healthy}
    return wrong
