"""/keys/: a key's settings (edit), a new secret (roll) and the list of revoked keys.

Like the rest of /keys/, each URL serves htmx a fragment (a <dialog>) and everyone else a
page of its own, so all of it works without JavaScript.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_http_methods
from django_htmx.http import HttpResponseClientRedirect, reswap, retarget

from accounts.reauth import reauthenticate_then, recently_authenticated
from accounts.security import SecurityContext
from apikeys.forms import ApiKeyEditForm, ApiKeyRollForm
from apikeys.models import ApiKey
from apikeys.services import UNSET, api_key_roll, api_key_update
from dosportal.htmx import HtmxHttpRequest, login_required, vary_on_htmx


def revoked_context(request: HtmxHttpRequest) -> dict[str, Any]:
    """The "Revoked" filter of /keys/ (`?status=revoked`): revoked keys stay listed, greyed."""
    showing = request.GET.get("status") == "revoked"
    revoked = request.user.api_keys.revoked().order_by("-revoked_at", "-id")
    return {
        "key_status": "revoked" if showing else "active",
        "revoked_keys": list(revoked) if showing else [],
        "revoked_count": revoked.count(),
    }


def _own_active_key(request: HtmxHttpRequest, key_id: int) -> ApiKey:
    from apikeys.views import _get_key_for_user

    return _get_key_for_user(request, key_id)


@require_http_methods(["GET", "HEAD", "POST"])
@login_required
def key_edit(request: HtmxHttpRequest, key_id: int) -> HttpResponse:
    api_key = _own_active_key(request, key_id)
    if request.method != "POST":
        form = ApiKeyEditForm(api_key=api_key)
        template = "apikeys/_edit_dialog.html" if request.htmx else "apikeys/key_edit.html"
        return vary_on_htmx(render(request, template, {"api_key": api_key, "form": form}))

    form = ApiKeyEditForm(request.POST, api_key=api_key)
    if form.is_valid() and form.loosened_fences() and not recently_authenticated(request):
        # Removing or widening a fence is what a stolen session would do first: as for a new
        # key, the password (or second factor) again. Nothing is saved; the form is filled in anew.
        messages.info(request, "Confirm it's you to remove or widen a key's limits.")
        return reauthenticate_then(request, reverse("key_edit", args=[api_key.pk]))
    if form.is_valid():
        changes = {field: value for field, value in form.changes.items() if value is not UNSET}
        try:
            api_key = api_key_update(
                api_key=api_key,
                name=form.cleaned_data["name"],
                context=SecurityContext.from_request(request),
                **changes,
            )
        except ValidationError as error:  # a race the form could not see (a name taken meanwhile)
            for field, problems in error.message_dict.items():
                form.add_error(field if field in form.fields else None, problems)
        else:
            messages.success(request, f"Saved the settings of “{api_key.name}”.")
            if request.htmx:
                return HttpResponseClientRedirect(reverse("keys"))
            return vary_on_htmx(redirect("keys"))
    if request.htmx:
        response = render(request, "apikeys/_edit_form.html", {"api_key": api_key, "form": form, "in_dialog": True})
        retarget(response, "#key-edit-form")
        reswap(response, "outerHTML")
        return vary_on_htmx(response)
    return vary_on_htmx(render(request, "apikeys/key_edit.html", {"api_key": api_key, "form": form}))


@require_http_methods(["GET", "HEAD", "POST"])
@login_required
@sensitive_variables("raw_key")
def key_roll(request: HtmxHttpRequest, key_id: int) -> HttpResponse:
    api_key = _own_active_key(request, key_id)
    if not recently_authenticated(request):  # a new secret, like a new key, needs a fresh sign-in
        messages.info(request, "Confirm it's you to roll a key.")
        return reauthenticate_then(request, reverse("key_roll", args=[api_key.pk]))
    form = ApiKeyRollForm(request.POST if request.method == "POST" else None)
    if request.method != "POST" or not form.is_valid():
        template = "apikeys/_roll_dialog.html" if request.htmx else "apikeys/key_roll.html"
        return vary_on_htmx(render(request, template, {"api_key": api_key, "form": form}))

    api_key, raw_key = api_key_roll(
        api_key=api_key,
        grace=dt.timedelta(hours=form.cleaned_data["grace"]),
        context=SecurityContext.from_request(request),
    )
    context = {"rolled_key": api_key, "raw_key": raw_key}
    # As at creation: the raw key is in this one response only, never a redirect or a message.
    if request.htmx:
        from apikeys.views import _keys_context

        # The new secret, and the list (showing the grace period) out of band, in this one response.
        full = {**_keys_context(request), **context, "close_dialog": True}
        response = render(request, "apikeys/keys.html#key-rolled", full)
    else:
        response = render(request, "apikeys/key_rolled.html", context)
    add_never_cache_headers(response)
    return vary_on_htmx(response)
