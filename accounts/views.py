from __future__ import annotations

from allauth.account.internal.flows.password_change import finalize_password_change
from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from allauth.usersessions.internal.flows.sessions import end_other_sessions, end_sessions
from allauth.usersessions.models import UserSession
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from accounts.forms import AccountPasswordChangeForm
from accounts.models import SecurityEvent
from accounts.plans import PLANS
from accounts.security import security_event_record


class LogoutView(auth_views.LogoutView):
    """POST only (Django refuses GET with 405), so a link or image cannot sign anyone out.
    The sign-in page then says so (the message outlives the session: it rides in a cookie)."""

    def post(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        response = super().post(request, *args, **kwargs)
        messages.success(request, "You are signed out.")
        return response


logout = LogoutView.as_view()


@login_required
@sensitive_post_parameters()
def account_settings(request: HttpRequest) -> HttpResponse:
    form = AccountPasswordChangeForm(request.user, request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        # Keeps this session, signs out the others, mails a notice and logs the change.
        finalize_password_change(request, user)
        return redirect("settings")
    return render(request, "accounts/settings.html", {"form": form, "plans": PLANS.values()})


@login_required
def security(request: HttpRequest) -> HttpResponse:
    """Two-factor, sessions and the security log, on one page."""
    user = request.user
    authenticators = {kind: [] for kind in Authenticator.Type.values}
    for authenticator in Authenticator.objects.filter(user=user).order_by("created_at"):
        authenticators[authenticator.type].append(authenticator)
    recovery = authenticators[Authenticator.Type.RECOVERY_CODES]
    events = Paginator(SecurityEvent.objects.filter(user=user), settings.DOS_AI_SECURITY_LOG_PAGE_SIZE)
    context = {
        "totp": authenticators[Authenticator.Type.TOTP][0] if authenticators[Authenticator.Type.TOTP] else None,
        "recovery_codes_left": len(recovery[0].wrap().get_unused_codes()) if recovery else None,
        "passkeys": authenticators[Authenticator.Type.WEBAUTHN],
        "sessions": sorted(UserSession.objects.purge_and_list(user), key=lambda s: s.last_seen_at, reverse=True),
        "emails": EmailAddress.objects.filter(user=user).order_by("-primary", "email"),
        "events": events.get_page(request.GET.get("page")),
    }
    return render(request, "accounts/security.html", context)


@require_POST
@login_required
def session_end(request: HttpRequest, session_id: int) -> HttpResponse:
    """Sign out one session; another user's session is a 404, like one that does not exist."""
    session = UserSession.objects.filter(pk=session_id, user=request.user).first()
    if session is None:
        raise Http404("No such session")
    was_current = session.is_current()
    end_sessions(request, [session])
    if was_current:
        return redirect("login")
    security_event_record(user=request.user, kind=SecurityEvent.Kind.SIGNED_OUT_OTHER_SESSIONS, request=request)
    messages.success(request, "That session is signed out.")
    return redirect("security")


@require_POST
@login_required
def sessions_end_others(request: HttpRequest) -> HttpResponse:
    end_other_sessions(request, request.user)
    security_event_record(user=request.user, kind=SecurityEvent.Kind.SIGNED_OUT_OTHER_SESSIONS, request=request)
    messages.success(request, "Every other session is signed out.")
    return redirect("security")
