"""The usage and billing pages: read-only views of the signed-in account's own data."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.core.handlers.asgi import ASGIRequest
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from accounts.plans import PLANS
from apikeys.models import ApiKey
from billing import exports, ranges, selectors
from billing.forms import AlertSettingsForm, UsageRangeForm
from billing.money import common_places
from dosportal.dbrouter import on_replica, replica_lag_notice, replica_reads
from dosportal.htmx import HtmxHttpRequest, login_required, render_page_or_fragment


def _get_key_for_user(request: HttpRequest, key_id: str) -> ApiKey:
    """404 for anything that is not one of the user's own keys, so another account's key ids
    cannot even be probed."""
    api_key = selectors.usage_key_for_user(user=request.user, key_id=key_id)
    if api_key is None:
        raise Http404("No such API key")
    return api_key


@require_GET
@login_required
def usage_page(request: HtmxHttpRequest) -> HttpResponse:
    """`/usage/[?range=today|7d|30d|month|last-month|custom&from=…&to=…][&key=ID]`. A range
    that cannot be used is a form error on the page, which then shows the last 30 days."""
    range_form = UsageRangeForm(request.GET, today=ranges.utc_today())
    window = range_form.window
    preset = range_form.preset if range_form.is_valid() else ranges.DEFAULT_PRESET
    key_id = request.GET.get("key", "").strip()
    selected_key = _get_key_for_user(request, key_id) if key_id else None

    # The aggregates may be a few seconds stale: the replica's, if there is one (dosportal.dbrouter).
    with replica_reads():
        daily = selectors.usage_daily(user=request.user, window=window, api_key=selected_key)
        by_key = selectors.usage_by_key(user=request.user, window=window)
        by_model = selectors.usage_by_model(user=request.user, window=window, api_key=selected_key)
        last_request_at = None if by_key or selected_key else selectors.usage_last_request_at(user=request.user)
    spike_days = [day for day in daily if day.is_spike]
    totals = selectors.usage_totals(daily)
    active_days = sum(1 for day in daily if day.requests)
    range_params = range_form.query_params()
    context = {
        "window": window,
        "range_form": range_form,
        "range_label": ranges.PRESETS.get(preset, "Custom range"),
        "range_is_default": preset == ranges.DEFAULT_PRESET,
        # For sentences: "All your keys, last 7 days." / "…, Jan 31 – Feb 1, 2026."
        "range_phrase": ranges.PRESETS[preset].lower() if preset in ranges.PRESETS else ranges.span_text(window),
        # (query, label, chosen) per preset: links that keep the key filter.
        "range_presets": [(f"range={name}", label, name == preset) for name, label in ranges.PRESETS.items()],
        "range_params": range_params,
        "range_query": urlencode(range_params),
        "range_custom": preset == ranges.CUSTOM or bool(range_form.errors),
        "daily": daily,
        # The table lists the days with requests; the chart already shows the quiet ones.
        "daily_rows": [day for day in reversed(daily) if day.requests],
        "totals": totals,
        "active_days": active_days,
        "quiet_days": len(daily) - active_days,
        "spike_days": spike_days,
        "spike_alerts": _spike_alerts(spike_days, by_key, selected_key),
        "by_key": by_key,
        "by_model": by_model,
        "cost_places": common_places(
            [totals.cost_micros]
            + [day.cost_micros for day in daily]
            + [item.totals.cost_micros for item in [*by_key, *by_model]]
        ),
        "filter_keys": selectors.usage_filter_keys(user=request.user, window=window),
        "selected_key": selected_key,
        "has_any_usage": selected_key is not None or bool(by_key),
        # Tells "never used the API" apart from "quiet for a month".
        "last_request_at": last_request_at,
        "replica_lag_seconds": replica_lag_notice(),
    }
    return render_page_or_fragment(request, "billing/usage.html", "usage-body", context)


def _spike_alerts(
    spike_days: list[selectors.DayUsage], by_key: list[selectors.KeyUsage], selected_key: ApiKey | None
) -> list[dict[str, object]]:
    """Each spike day with the key that made most requests that day: the first suspect when a
    key has leaked."""
    alerts = []
    for spike in spike_days:
        suspect, suspect_requests = selected_key, spike.requests
        if selected_key is None:
            ranked = sorted(
                ((day.requests, item.api_key) for item in by_key for day in item.daily if day.day == spike.day),
                key=lambda pair: pair[0],
                reverse=True,
            )
            suspect, suspect_requests = (ranked[0][1], ranked[0][0]) if ranked else (None, 0)
        alerts.append({"day": spike, "api_key": suspect, "key_requests": suspect_requests})
    return alerts


@require_GET
@login_required
def billing_page(request: HttpRequest) -> HttpResponse:
    user = request.user
    account = selectors.credit_account_for(user=user)
    ledger = selectors.ledger_page(user=user, page_number=request.GET.get("page"))
    context = {
        "account": account,
        "plan": user.plan_info,
        "plans": list(PLANS.values()),
        "ledger": ledger,
        "ledger_places": common_places(
            amount for line in ledger.object_list for amount in (line.amount_micros, line.balance_after_micros)
        ),
        "served_models": selectors.served_models_active(),
        # Optional: who to write to for credit. Not every deployment has a billing inbox.
        "billing_contact": settings.DOS_AI_BILLING_CONTACT,
    }
    return render(request, "billing/billing.html", context)


def _csv_response(
    request: HttpRequest, filename: str, header: list[str], rows: Iterable[list[object]]
) -> StreamingHttpResponse:
    lines = exports.csv_lines(header, rows)
    # Under ASGI only an async iterator is streamed; under WSGI only a sync one is.
    content = exports.async_chunks(lines) if isinstance(request, ASGIRequest) else lines
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@require_GET
@login_required
def usage_export(request: HtmxHttpRequest) -> HttpResponse:
    """`/usage/export.csv?from=YYYY-MM-DD&to=YYYY-MM-DD[&key=ID]`: one row per day × key × model."""
    try:
        span = exports.export_range(request.GET)
    except exports.ExportRangeError as error:
        return HttpResponseBadRequest(str(error), content_type="text/plain; charset=utf-8")
    key_id = request.GET.get("key", "").strip()
    api_key = _get_key_for_user(request, key_id) if key_id else None
    # Read as the rows are streamed, from the replica if there is one (the usage page's figures).
    rows = on_replica(exports.usage_rows(user=request.user, span=span, api_key=api_key))
    suffix = f"-key-{api_key.pk}" if api_key else ""
    filename = f"dos-ai-usage-{span.first_day}-to-{span.last_day}{suffix}.csv"
    return _csv_response(request, filename, exports.USAGE_COLUMNS, rows)


@require_GET
@login_required
def ledger_export(request: HtmxHttpRequest) -> HttpResponse:
    """`/billing/ledger.csv`: every ledger line, newest first, as the billing page shows them
    (from the primary, like that page: it is the account's money, and must show the last charge)."""
    rows = exports.ledger_rows(selectors.ledger_lines_all(user=request.user))
    return _csv_response(request, "dos-ai-ledger.csv", exports.LEDGER_COLUMNS, rows)


@require_http_methods(["GET", "HEAD", "POST"])
@login_required
def alert_settings(request: HtmxHttpRequest) -> HttpResponse:
    """The alerts card of /settings/ posts here. Saved: back to /settings/ with a message.
    Refused: this page, with the card and its errors (the settings page belongs to accounts)."""
    form = AlertSettingsForm(
        request.POST if request.method == "POST" else None, instance=selectors.alert_settings_for(user=request.user)
    )
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Alert settings saved.")
        return redirect(f"{reverse('settings')}#alerts")
    return render(request, "billing/alert_settings.html", {"alert_form": form})
