"""allauth's and Django's sign-in signals, written to the security log (and a few to the user's inbox).

Receivers only call services: the log is written by `security_event_record`, the starting
credit by `account_email_verified`, notices by `notice_send`.
"""

from __future__ import annotations

from typing import Any

from allauth.account import signals as account_signals
from allauth.account.internal.flows.login import get_authentication_records, record_authentication
from allauth.mfa import signals as mfa_signals
from allauth.mfa.models import Authenticator
from django.contrib.auth.signals import user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest

from accounts.middleware import mark_session_seen
from accounts.models import SecurityEvent, User
from accounts.notices import notice_send
from accounts.security import SecurityContext, security_event_record
from accounts.services import account_email_verified

Kind = SecurityEvent.Kind


def _record(user: User, kind: str, request: HttpRequest | None, detail: str = "") -> SecurityContext:
    context = SecurityContext.from_request(request, actor=user) if request is not None else SecurityContext(actor=user)
    security_event_record(user=user, kind=kind, context=context, detail=detail)
    return context


@receiver(account_signals.user_logged_in, dispatch_uid="accounts-signed-in")
def on_signed_in(sender: type, request: HttpRequest, user: User, **kwargs: Any) -> None:
    earlier = SecurityEvent.objects.filter(user=user, kind=Kind.SIGNED_IN)
    user_agent = SecurityContext.from_request(request).user_agent
    # A device is known by its browser (user agent). The first sign-in ever needs no notice.
    is_new_device = earlier.exists() and not earlier.filter(user_agent=user_agent).exists()
    context = _record(user, Kind.SIGNED_IN, request)
    if not get_authentication_records(request, user):
        # Signed in by the confirmation link (allauth records no method for it): the link
        # proves the email, which counts as a fresh sign-in for the steps that need one.
        record_authentication(request, user, method="email_link")
    mark_session_seen(request)  # allauth has just recorded the session with its sign-in time
    if is_new_device:
        notice_send(user=user, template="new_sign_in", context=context, extra={})


@receiver(user_login_failed, dispatch_uid="accounts-sign-in-failed")
def on_sign_in_failed(sender: type, credentials: dict, request: HttpRequest | None = None, **kwargs: Any) -> None:
    email = str(credentials.get("email") or credentials.get("username") or "").strip()
    user = User.objects.get_by_email(email)
    if user is not None:
        context = SecurityContext.from_request(request) if request is not None else SecurityContext()
        security_event_record(user=user, kind=Kind.SIGN_IN_FAILED, context=context)


@receiver(account_signals.email_confirmed, dispatch_uid="accounts-email-confirmed")
def on_email_confirmed(sender: type, request: HttpRequest, email_address: Any, **kwargs: Any) -> None:
    user = email_address.user
    _record(user, Kind.EMAIL_VERIFIED, request, detail=email_address.email)
    if email_address.email.lower() == user.email.lower():
        account_email_verified(user=user)


@receiver(account_signals.email_changed, dispatch_uid="accounts-email-changed")
def on_email_changed(
    sender: type,
    request: HttpRequest,
    user: User,
    to_email_address: Any,
    from_email_address: Any = None,
    **kwargs: Any,
) -> None:
    # With ACCOUNT_CHANGE_EMAIL allauth sends this on every confirmation, the sign-up's own
    # included (from the address to itself, or from none): only a different address is a change.
    if from_email_address is None or from_email_address.email.lower() == to_email_address.email.lower():
        return
    _record(user, Kind.EMAIL_CHANGED, request, detail=f"now {to_email_address.email}")


@receiver(account_signals.password_changed, dispatch_uid="accounts-password-changed")
@receiver(account_signals.password_set, dispatch_uid="accounts-password-set")
def on_password_changed(sender: type, request: HttpRequest, user: User, **kwargs: Any) -> None:
    _record(user, Kind.PASSWORD_CHANGED, request)


@receiver(account_signals.password_reset, dispatch_uid="accounts-password-reset")
def on_password_reset(sender: type, request: HttpRequest, user: User, **kwargs: Any) -> None:
    _record(user, Kind.PASSWORD_RESET, request)


_ADDED = {Authenticator.Type.TOTP: Kind.TWO_FACTOR_ENABLED, Authenticator.Type.WEBAUTHN: Kind.PASSKEY_ADDED}
_REMOVED = {Authenticator.Type.TOTP: Kind.TWO_FACTOR_DISABLED, Authenticator.Type.WEBAUTHN: Kind.PASSKEY_REMOVED}


@receiver(mfa_signals.authenticator_added, dispatch_uid="accounts-mfa-added")
def on_authenticator_added(sender: type, request: HttpRequest, user: User, authenticator: Any, **kwargs: Any) -> None:
    if kind := _ADDED.get(authenticator.type):
        _record(user, kind, request)


@receiver(mfa_signals.authenticator_removed, dispatch_uid="accounts-mfa-removed")
def on_authenticator_removed(sender: type, request: HttpRequest, user: User, authenticator: Any, **kwargs: Any) -> None:
    if kind := _REMOVED.get(authenticator.type):
        _record(user, kind, request)


@receiver(mfa_signals.authenticator_reset, dispatch_uid="accounts-mfa-reset")
def on_authenticator_reset(sender: type, request: HttpRequest, user: User, authenticator: Any, **kwargs: Any) -> None:
    if authenticator.type == Authenticator.Type.RECOVERY_CODES:
        _record(user, Kind.RECOVERY_CODES_GENERATED, request)


@receiver(mfa_signals.authentication_failed, dispatch_uid="accounts-mfa-failed")
def on_second_factor_failed(sender: type, request: HttpRequest, user: User, **kwargs: Any) -> None:
    security_event_record(user=user, kind=Kind.SECOND_FACTOR_FAILED, context=SecurityContext.from_request(request))
