"""/settings/webhooks/: an account's endpoints, their secrets (shown once) and delivery logs.

Plain forms with post/redirect/get, except the two answers that show a secret: those render
the page directly with no-store headers, so the secret exists only in that one response
(as a new API key does). Another account's endpoint or delivery is a 404.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_http_methods, require_POST

from dosportal.htmx import HtmxHttpRequest, login_required
from webhooks import services
from webhooks.events import EVENT_TYPES
from webhooks.forms import EndpointForm
from webhooks.models import Delivery, Endpoint

LOG_SIZE = 50


def _get_endpoint_for_user(request: HtmxHttpRequest, endpoint_id: int) -> Endpoint:
    try:
        return Endpoint.objects.get(pk=endpoint_id, owner=request.user)
    except Endpoint.DoesNotExist:
        raise Http404("No such webhook endpoint") from None


def _apply_errors(form: EndpointForm, error: ValidationError) -> None:
    if hasattr(error, "error_dict"):
        for field, problems in error.message_dict.items():
            form.add_error(field if field in form.fields else None, problems)
    else:
        form.add_error(None, error.messages)


def _secret_response(request: HtmxHttpRequest, template: str, context: dict[str, object]) -> HttpResponse:
    response = render(request, template, context)
    add_never_cache_headers(response)  # the secret must not be kept by a cache or the Back button
    return response


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def webhooks_page(request: HtmxHttpRequest) -> HttpResponse:
    form = EndpointForm(request.POST or None, initial={"event_types": list(EVENT_TYPES)})
    new_endpoint = None
    if request.method == "POST" and form.is_valid():
        try:
            new_endpoint = services.endpoint_create(owner=request.user, **form.cleaned_data)
        except ValidationError as error:
            _apply_errors(form, error)
        else:
            form = EndpointForm(initial={"event_types": list(EVENT_TYPES)})
    context = {
        "endpoints": request.user.webhook_endpoints.all(),
        "form": form,
        "new_endpoint": new_endpoint,
        "event_names": EVENT_TYPES,
    }
    if new_endpoint is not None:
        return _secret_response(request, "webhooks/webhooks.html", context)
    return render(request, "webhooks/webhooks.html", context)


def _endpoint_context(endpoint: Endpoint, form: EndpointForm | None = None) -> dict[str, object]:
    initial = {"url": endpoint.url, "description": endpoint.description, "event_types": endpoint.event_types}
    return {
        "endpoint": endpoint,
        "form": form or EndpointForm(initial=initial),
        "deliveries": endpoint.deliveries.all()[:LOG_SIZE],
        "event_names": EVENT_TYPES,
    }


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def endpoint_page(request: HtmxHttpRequest, endpoint_id: int) -> HttpResponse:
    """The endpoint, its settings form (posts here) and its delivery log."""
    endpoint = _get_endpoint_for_user(request, endpoint_id)
    form = None
    if request.method == "POST":
        form = EndpointForm(request.POST)
        if form.is_valid():
            try:
                services.endpoint_update(endpoint=endpoint, **form.cleaned_data)
            except ValidationError as error:
                _apply_errors(form, error)
            else:
                messages.success(request, "Endpoint saved.")
                return redirect("webhook_endpoint", endpoint_id=endpoint.pk)
        endpoint.refresh_from_db()
    return render(request, "webhooks/endpoint.html", _endpoint_context(endpoint, form))


@login_required
@require_POST
def endpoint_roll_secret(request: HtmxHttpRequest, endpoint_id: int) -> HttpResponse:
    endpoint = _get_endpoint_for_user(request, endpoint_id)
    services.endpoint_roll_secret(endpoint=endpoint)
    context = {**_endpoint_context(endpoint), "new_secret": endpoint.secret}
    return _secret_response(request, "webhooks/endpoint.html", context)


@login_required
@require_POST
def endpoint_test(request: HtmxHttpRequest, endpoint_id: int) -> HttpResponse:
    endpoint = _get_endpoint_for_user(request, endpoint_id)
    services.webhook_test_send(endpoint=endpoint)
    messages.success(request, "Test event queued: it appears in the log below within a few seconds.")
    return redirect("webhook_endpoint", endpoint_id=endpoint.pk)


@login_required
@require_POST
def endpoint_enable(request: HtmxHttpRequest, endpoint_id: int) -> HttpResponse:
    endpoint = _get_endpoint_for_user(request, endpoint_id)
    services.endpoint_enable(endpoint=endpoint)
    messages.success(request, "Endpoint turned on: what it missed is sent again, in order.")
    return redirect("webhook_endpoint", endpoint_id=endpoint.pk)


@login_required
@require_POST
def endpoint_delete(request: HtmxHttpRequest, endpoint_id: int) -> HttpResponse:
    endpoint = _get_endpoint_for_user(request, endpoint_id)
    endpoint.delete()
    messages.success(request, f"Endpoint {endpoint.url} deleted; it receives nothing more.")
    return redirect(reverse("webhooks"))


@login_required
@require_POST
def delivery_send_again(request: HtmxHttpRequest, endpoint_id: int, delivery_id: int) -> HttpResponse:
    endpoint = _get_endpoint_for_user(request, endpoint_id)
    try:
        delivery = endpoint.deliveries.get(pk=delivery_id)
    except Delivery.DoesNotExist:
        raise Http404("No such delivery") from None
    services.delivery_send_again(delivery=delivery)
    messages.success(request, f"{delivery.event_type} ({delivery.webhook_id}) queued to be sent again.")
    return redirect("webhook_endpoint", endpoint_id=endpoint.pk)
