"""The /keys/ dashboard: list, create (the raw key shown once), confirm and revoke.

One URL serves HTMX and plain requests: HTMX gets the fragment it swaps, a plain
request (JavaScript off, or a test client) gets the full page, so every response
that differs by `HX-Request` says so in `Vary`.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_POST, require_safe
from django_htmx.http import reswap, retarget, trigger_client_event

from apikeys.forms import ApiKeyCreateForm
from apikeys.models import ApiKey
from apikeys.services import api_key_create, api_key_revoke
from apikeys.settings_views import revoked_context
from dosportal.htmx import HtmxHttpRequest, login_required, vary_on_htmx


def _get_key_for_user(request: HtmxHttpRequest, key_id: int) -> ApiKey:
    """The user's own active key, or 404: another user's key and a revoked key look the same."""
    try:
        return ApiKey.objects.active().get(pk=key_id, owner=request.user)
    except ApiKey.DoesNotExist:
        raise Http404("No such API key") from None


def _render_keys_page(
    request: HtmxHttpRequest,
    *,
    form: ApiKeyCreateForm,
    api_key: ApiKey | None = None,
    raw_key: str | None = None,
) -> HttpResponse:
    context = {
        "keys": request.user.api_keys.active(),
        "form": form,
        "new_key": api_key,
        "raw_key": raw_key,
        **revoked_context(request),
    }
    return render(request, "apikeys/keys.html", context)


@require_safe
@login_required
def keys_page(request: HtmxHttpRequest) -> HttpResponse:
    # htmx restoring its history wants the whole page, like a plain request.
    if request.htmx and not request.htmx.history_restore_request:
        # The list region refreshing itself after a "key-created" event.
        context = {"keys": request.user.api_keys.active(), "form": ApiKeyCreateForm()}
        response = render(request, "apikeys/keys.html#keys-table", context)
    else:
        response = _render_keys_page(request, form=ApiKeyCreateForm())
    return vary_on_htmx(response)


@require_POST
@login_required
@sensitive_variables("raw_key")
def key_create(request: HtmxHttpRequest) -> HttpResponse:
    form = ApiKeyCreateForm(request.POST, owner=request.user)
    if not form.is_valid():
        # 200, not 4xx: htmx swaps only successful responses, and the errors are the content.
        if request.htmx:
            response = render(request, "apikeys/_create_form.html", {"form": form})
            retarget(response, "#key-create-form")
            reswap(response, "outerHTML")
        else:
            response = _render_keys_page(request, form=form)
        return vary_on_htmx(response)

    api_key, raw_key = api_key_create(owner=request.user, name=form.cleaned_data["name"], settings=form.key_settings())
    # The raw key goes into this one response and nowhere else: not the session, not a
    # message, not a redirect target. Hence no redirect after this POST, even without JS.
    if request.htmx:
        response = render(request, "apikeys/keys.html#new-key", {"new_key": api_key, "raw_key": raw_key})
        # The list refreshes itself on this event, after the key exists: no request races the create.
        trigger_client_event(response, "key-created", {"id": api_key.pk})
    else:
        response = _render_keys_page(request, form=ApiKeyCreateForm(), api_key=api_key, raw_key=raw_key)
    # Neither the browser (nor its back/forward cache) nor a proxy may keep a copy.
    add_never_cache_headers(response)
    return vary_on_htmx(response)


@require_safe
@login_required
def key_delete(request: HtmxHttpRequest, key_id: int) -> HttpResponse:
    """The confirmation: a <dialog> fragment for htmx, a page of its own without JavaScript."""
    api_key = _get_key_for_user(request, key_id)
    template = "apikeys/_delete_dialog.html" if request.htmx else "apikeys/key_delete.html"
    return vary_on_htmx(render(request, template, {"api_key": api_key}))


@require_POST
@login_required
def key_revoke(request: HtmxHttpRequest, key_id: int) -> HttpResponse:
    api_key = _get_key_for_user(request, key_id)
    api_key_revoke(api_key=api_key)
    messages.success(request, f"Revoked “{api_key.name}”. Requests using it now fail.")
    if request.htmx:
        # The list without the key (or the empty state), and the message, which the form
        # picks out of the response with hx-select-oob into the page's live region.
        context = {"keys": request.user.api_keys.active(), "form": ApiKeyCreateForm()}
        return vary_on_htmx(render(request, "apikeys/keys.html#key-revoked", context))
    return vary_on_htmx(redirect("keys"))
