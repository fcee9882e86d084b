"""What every dashboard view serving HTMX needs: the request type, the login wall, and one rule
for answering a URL with either its page or its fragment."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING

from django.contrib.auth.decorators import login_required as django_login_required
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

if TYPE_CHECKING:  # the user model only for typing: this module belongs to no app
    from accounts.models import User


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails
    user: User


def login_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Django's login_required, except that an htmx request from an expired session
    sends the whole page to the login form instead of swapping the form into a fragment."""
    plain = django_login_required(view)

    @wraps(view)
    def wrapper(request: HtmxHttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        if request.htmx and not request.user.is_authenticated:
            back_to = request.htmx.current_url_abs_path or request.get_full_path()
            return HttpResponseClientRedirect(redirect_to_login(back_to).url)
        return plain(request, *args, **kwargs)

    return wrapper


def vary_on_htmx(response: HttpResponse) -> HttpResponse:
    """For a URL that answers htmx with a fragment and everyone else with the page."""
    patch_vary_headers(response, ["HX-Request"])
    return response


def render_page_or_fragment(
    request: HtmxHttpRequest, template_name: str, fragment: str, context: dict[str, object]
) -> HttpResponse:
    """The partial `fragment` of `template_name` for an htmx request, the whole page otherwise.

    An htmx history restore (Back after htmx's own history cache missed) wants the whole page,
    like a plain request: answering it with the fragment would make the fragment the page.
    """
    if request.htmx and not request.htmx.history_restore_request:
        template_name = f"{template_name}#{fragment}"
    return vary_on_htmx(render(request, template_name, context))
