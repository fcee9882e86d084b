from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


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
    upstreams = upstream_health()
    if not upstreams:
        return JsonResponse({"status": "ok", "database": "ok"})
    unavailable = any(counts["healthy"] == 0 for counts in upstreams.values())
    return JsonResponse(
        {"status": "unavailable" if unavailable else "degraded", "database": "ok", "upstreams": upstreams},
        status=503 if unavailable else 200,
    )


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
