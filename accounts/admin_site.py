"""The Django admin, signed into through the portal's own sign-in (so two-factor applies there too).

With DOS_AI_REQUIRE_2FA_FOR_STAFF on (the default when DEBUG is off), a staff member
without two-factor is refused and sent to /settings/security/ to turn it on.
"""

from __future__ import annotations

from allauth.account.decorators import secure_admin_login
from allauth.mfa.utils import is_mfa_enabled
from django.conf import settings
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect


def staff_lacks_required_2fa(user: object) -> bool:
    return bool(settings.DOS_AI_REQUIRE_2FA_FOR_STAFF and not is_mfa_enabled(user))


class PortalAdminSite(admin.AdminSite):
    site_header = "DOS AI administration"
    site_title = "DOS AI admin"
    index_title = "Portal administration"

    def has_permission(self, request: HttpRequest) -> bool:
        return super().has_permission(request) and not staff_lacks_required_2fa(request.user)

    def login(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        user = request.user
        if user.is_authenticated and user.is_active and user.is_staff and staff_lacks_required_2fa(user):
            messages.warning(request, "Turn on two-factor authentication to use the admin.")
            return redirect("security")
        return secure_admin_login(super().login)(request, extra_context)
