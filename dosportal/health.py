"""The load balancer's health check: one answer, two ways in.

- `dosportal.asgi` answers `/healthz` itself, before any Django handler: the database is
  pinged on /v1's own async pool (dosportal.v1.store), so a poll costs one `SELECT 1` and no
  thread hop. This is the production path.
- The Django view (`dosportal.views.healthz`) answers the same under WSGI and Django's test
  client, pinging through the ORM.

200 when the database answers (with the upstreams that are short of healthy endpoints, if
any: "degraded"), 503 when it does not or when a model has no healthy endpoint left.

A settlement spool (`DOS_AI_SPOOL_DIR`) that cannot be written adds `"spool": "not writable"`
(and "degraded" to an "ok"), logged at ERROR and counted in
`dos_ai_spool_write_failures_total{operation="check"}`, but keeps the 200: such a worker
still serves and charges every call while PostgreSQL is up, and its settlements wait in
memory while it is down (dosportal.v1.settler) — while the usual cause, a deployment whose
spool is misconfigured, is the same on every worker, so a load balancer that pulled workers
for it would take the whole service down for a risk that only matters during an outage.
The check creates, writes and fsyncs an unnamed file in the directory, at most once every
SPOOL_CHECK_SECONDS per worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpResponse
from django.utils.cache import add_never_cache_headers

# Load balancers poll /healthz often; the upstreams' health is read at most once a second per
# worker (it changes on the workers' own time scale of seconds), the database on every call.
UPSTREAM_HEALTH_SECONDS = 1.0
_upstream_health_memo: dict[str, Any] = {"at": -1e9, "value": {}}

SPOOL_CHECK_SECONDS = 5.0
_spool_memo: dict[str, Any] = {"at": -1e9, "value": True}

Upstreams = dict[str, dict[str, int]]

logger = logging.getLogger(__name__)


def answer(*, database_ok: bool, upstreams: Upstreams, spool_ok: bool = True) -> tuple[int, dict[str, Any]]:
    """The status code and body of /healthz."""
    spool = {} if spool_ok else {"spool": "not writable"}
    if not database_ok:
        return 503, {"status": "error", "database": "unavailable", **spool}
    if not upstreams:
        return 200, {"status": "ok" if spool_ok else "degraded", "database": "ok", **spool}
    unavailable = any(counts["healthy"] == 0 for counts in upstreams.values())
    body = {"status": "unavailable" if unavailable else "degraded", "database": "ok", "upstreams": upstreams, **spool}
    return (503 if unavailable else 200), body


def spool_writable() -> bool:
    """A file can be created, written and fsynced in the settlement spool's directory."""
    from django.conf import settings

    from dosportal import metrics

    directory = Path(settings.DOS_AI_SPOOL_DIR)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory, prefix=".healthz-") as probe:
            probe.write(b"\n")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        metrics.spool_write_failed("check")
        if _spool_memo["value"]:
            logger.error("the settlement spool %s cannot be written: %r", directory, error)
        return False
    return True


def spool_check_is_fresh() -> bool:
    return time.monotonic() - _spool_memo["at"] < SPOOL_CHECK_SECONDS


def spool_writable_recent() -> bool:
    """`spool_writable()`, checked at most once every SPOOL_CHECK_SECONDS (blocking disk I/O)."""
    if not spool_check_is_fresh():
        _spool_memo["value"], _spool_memo["at"] = spool_writable(), time.monotonic()
    return _spool_memo["value"]


def database_answers() -> bool:
    """Django's own connection answers `SELECT 1` (any failure means "not healthy"). The ASGI
    answer asks the /v1 store instead (`Store.ping`), which on SQLite runs this in a thread."""
    from django.db import connection

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception:  # noqa: BLE001 - any database failure means "not healthy"
        return False
    return True


def upstream_health_is_fresh() -> bool:
    return time.monotonic() - _upstream_health_memo["at"] < UPSTREAM_HEALTH_SECONDS


def upstream_health_recent() -> Upstreams:
    """`upstream_health()`, read at most once a second (ORM and cache: call it from sync code)."""
    if not upstream_health_is_fresh():
        _upstream_health_memo["value"], _upstream_health_memo["at"] = upstream_health(), time.monotonic()
    return _upstream_health_memo["value"]


def upstream_health() -> Upstreams:
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
    wrong: Upstreams = {}
    for model_id, name in ServedModel.objects.filter(is_active=True).values_list("id", "name"):
        urls = rows.get(model_id) or shared
        healthy = sum(1 for url in urls if (health_of(url) or {}).get("state", "healthy") == "healthy")
        if healthy < len(urls):
            wrong[name] = {"configured": len(urls), "healthy": healthy}
    return wrong


@sync_to_async
def _upstream_health_in_thread() -> Upstreams:
    from django.db import close_old_connections

    try:
        return upstream_health_recent()
    finally:
        close_old_connections()


async def asgi_healthz(scope: dict[str, Any], send: Any) -> None:
    """/healthz as a bare ASGI answer (GET and HEAD; anything else 405), never cached."""
    from dosportal.v1.store import get_store

    method = scope["method"]
    if method not in ("GET", "HEAD"):
        await _send(send, 405, b"", [(b"allow", b"GET, HEAD")], method)
        return
    database_ok = await get_store().ping()
    if not database_ok:
        upstreams: Upstreams = {}  # the answer is 503 whatever they are, and they are read from the database
    elif upstream_health_is_fresh():
        upstreams = _upstream_health_memo["value"]
    else:
        upstreams = await _upstream_health_in_thread()
    spool_ok = _spool_memo["value"] if spool_check_is_fresh() else await asyncio.to_thread(spool_writable_recent)
    status, body = answer(database_ok=database_ok, upstreams=upstreams, spool_ok=spool_ok)
    content = json.dumps(body).encode()
    await _send(send, status, content, [(b"content-type", b"application/json")], method)


async def _send(send: Any, status: int, content: bytes, headers: list[tuple[bytes, bytes]], method: str) -> None:
    never_cached = HttpResponse()
    add_never_cache_headers(never_cached)  # what the Django view's @never_cache sends
    headers = [
        *headers,
        (b"content-length", str(len(content)).encode()),
        *((name.lower().encode(), value.encode()) for name, value in never_cached.items() if name != "Content-Type"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content if method != "HEAD" else b""})
