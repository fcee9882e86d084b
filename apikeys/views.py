"""The /keys/ dashboard: list, create (the raw key shown once), confirm and revoke.

One URL serves HTMX and plain requests: HTMX gets the fragment it swaps, a plain
request (JavaScript off, or a test client) gets the full page, so every response
that differs by `HX-Request` says so in `Vary`.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_POST, require_safe
from django_htmx.http import reswap, retarget

from accounts.reauth import reauthenticate_then, recently_authenticated
from accounts.security import SecurityContext
from accounts.services import account_has_verified_email
from apikeys.forms import ApiKeyCreateForm
from apikeys.models import ApiKey
from apikeys.services import api_key_create, api_key_revoke
from apikeys.settings_views import revoked_context
from apikeys.unusual import api_key_resume
from dosportal.htmx import HtmxHttpRequest, login_required, render_page_or_fragment, vary_on_htmx


def _get_key_for_user(request: HtmxHttpRequest, key_id: int) -> ApiKey:
    """The user's own key, revoked or not, or 404: another user's key and a key that never
    existed look the same."""
    try:
        return ApiKey.objects.get(pk=key_id, owner=request.user)
    except ApiKey.DoesNotExist:
        raise Http404("No such API key") from None


def _keys_context(
    request: HtmxHttpRequest,
    *,
    form: ApiKeyCreateForm | None = None,
    new_key: ApiKey | None = None,
    raw_key: str | None = None,
) -> dict[str, object]:
    """Everything keys.html and its partials need: the one place the list is built."""
    return {
        "keys": request.user.api_keys.active(),
        "form": form or ApiKeyCreateForm(),
        "new_key": new_key,
        "raw_key": raw_key,
        **revoked_context(request),
    }


def _already_revoked(request: HtmxHttpRequest, api_key: ApiKey) -> None:
    # Two tabs, or Back to a page from before the revoke: nothing to do, and nothing went wrong.
    messages.info(request, f"“{api_key.name}” was already revoked. Requests using it fail.")


@require_safe
@login_required
def keys_page(request: HtmxHttpRequest) -> HttpResponse:
    return render_page_or_fragment(request, "apikeys/keys.html", "keys-table", _keys_context(request))


@require_POST
@login_required
@sensitive_variables("raw_key")
def key_create(request: HtmxHttpRequest) -> HttpResponse:
    if not recently_authenticated(request):
        messages.info(request, "Confirm it's you to create a key.")
        return reauthenticate_then(request, reverse("keys"))
    form = ApiKeyCreateForm(request.POST, owner=request.user)
    if form.is_valid() and not account_has_verified_email(request.user):
        form.add_error("name", "Confirm your email address before creating a key: use the link we sent you.")
    if not form.is_valid():
        # 200, not 4xx: htmx swaps only successful responses, and the errors are the content.
        if request.htmx:
            response = render(request, "apikeys/_create_form.html", {"form": form})
            retarget(response, "#key-create-form")
            reswap(response, "outerHTML")
        else:
            response = render(request, "apikeys/keys.html", _keys_context(request, form=form))
        return vary_on_htmx(response)

    api_key, raw_key = api_key_create(
        owner=request.user,
        name=form.cleaned_data["name"],
        settings=form.key_settings(),
        context=SecurityContext.from_request(request),
    )
    # The raw key goes into this one response and nowhere else: not the session, not a
    # message, not a redirect target. Hence no redirect after this POST, even without JS.
    context = _keys_context(request, new_key=api_key, raw_key=raw_key)
    # htmx: the key panel, and the list with the new key out of band, in this one response.
    template = "apikeys/keys.html#key-created" if request.htmx else "apikeys/keys.html"
    response = render(request, template, context)
    # Neither the browser (nor its back/forward cache) nor a proxy may keep a copy.
    add_never_cache_headers(response)
    return vary_on_htmx(response)


@require_safe
@login_required
def key_delete(request: HtmxHttpRequest, key_id: int) -> HttpResponse:
    """The confirmation: a <dialog> fragment for htmx, a page of its own without JavaScript."""
    api_key = _get_key_for_user(request, key_id)
    if not api_key.is_active:
        if request.htmx:
            context = {**_keys_context(request), "api_key": api_key}
            response = render(request, "apikeys/keys.html#key-gone", context)
        else:
            _already_revoked(request, api_key)
            response = redirect("keys")
        return vary_on_htmx(response)
    template = "apikeys/_delete_dialog.html" if request.htmx else "apikeys/key_delete.html"
    return vary_on_htmx(render(request, template, {"api_key": api_key}))


@require_POST
@login_required
def key_revoke(request: HtmxHttpRequest, key_id: int) -> HttpResponse:
    api_key = _get_key_for_user(request, key_id)
    if api_key.is_active:
        api_key_revoke(api_key=api_key, context=SecurityContext.from_request(request))
        messages.success(request, f"Revoked “{api_key.name}”. Requests using it now fail.")
    else:
        _already_revoked(request, api_key)
    if request.htmx:
        # The list without the key (or the empty state), and the message, which the form
        # picks out of the response with hx-select-oob into the page's live region.
        return vary_on_htmx(render(request, "apikeys/keys.html#key-revoked", _keys_context(request)))
    return vary_on_htmx(redirect("keys"))


@require_POST
@login_required
def key_resume(request: HtmxHttpRequest, key_id: int) -> HttpResponse:
    """Resume a key suspended for unusual spend (a plain form post, then the list)."""
    api_key = _get_key_for_user(request, key_id)
    if api_key_resume(api_key=api_key, context=SecurityContext.from_request(request)):
        messages.success(request, f"Resumed “{api_key.name}”: requests with it are served again.")
    else:
        messages.info(request, f"“{api_key.name}” was not suspended.")
    return redirect("keys")
