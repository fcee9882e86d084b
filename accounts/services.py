"""Writes to accounts that more than one caller needs (admin, commands, pages)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.models import SecurityEvent, User
from accounts.plans import PLANS
from accounts.security import SecurityContext, security_event_record
from accounts.signals import account_verified

# The override columns are PostgreSQL integers.
LIMIT_MAXIMUM = 2**31 - 1


def account_set_plan(*, user: User, plan: str, context: SecurityContext | None = None) -> User:
    """Change the plan; the next /v1 request is limited by it (limits are read per request)."""
    if plan not in PLANS:
        raise ValidationError(f"Unknown plan {plan!r}; choose one of {', '.join(PLANS)}.")
    previous = user.plan
    user.plan = plan
    user.save(update_fields=["plan"])
    if previous != plan:
        security_event_record(
            user=user, kind=SecurityEvent.Kind.PLAN_CHANGED, context=context, detail=f"{previous} → {plan}"
        )
    return user


def account_set_limits(
    *,
    user: User,
    requests_per_minute: int | None,
    tokens_per_minute: int | None,
    context: SecurityContext | None = None,
) -> User:
    """Override the plan's limits for one account; None for both returns to the plan."""
    for label, value in (("requests per minute", requests_per_minute), ("tokens per minute", tokens_per_minute)):
        if value is not None and value < 1:
            raise ValidationError(f"The {label} limit must be at least 1.")
        if value is not None and value > LIMIT_MAXIMUM:
            raise ValidationError(f"The {label} limit must be at most {LIMIT_MAXIMUM:,}.")
    user.requests_per_minute_override = requests_per_minute
    user.tokens_per_minute_override = tokens_per_minute
    user.save(update_fields=["requests_per_minute_override", "tokens_per_minute_override"])
    security_event_record(
        user=user, kind=SecurityEvent.Kind.LIMITS_CHANGED, context=context, detail=limits_summary(user)
    )
    return user


def limits_summary(user: User) -> str:
    """The security log's words for an account's limits after a change."""
    if not user.has_limit_override:
        return "back to the plan's limits"
    return f"{user.requests_per_minute} requests and {user.tokens_per_minute} tokens per minute"


def account_open_verified(*, user: User) -> None:
    """An account made by an operator (create_user, createsuperuser, the admin's add form):
    its email counts as verified and it gets the starting credit at once (billing listens to
    accounts.signals.account_verified)."""
    with transaction.atomic():
        account_mark_email_verified(user=user)
        account_verified.send(sender=User, user=user)


def account_mark_email_verified(*, user: User) -> None:
    """The user's current email is verified and primary (an operator set it: there is no one to ask)."""
    from allauth.account.models import EmailAddress

    email = user.email.lower()
    with transaction.atomic():
        EmailAddress.objects.filter(user=user).exclude(email=email).update(primary=False)
        EmailAddress.objects.update_or_create(user=user, email=email, defaults={"verified": True, "primary": True})


def account_email_verified(*, user: User) -> None:
    """A self-made account confirmed its email: the starting credit, once (billing's receiver
    grants only when it opens the credit account, so a second confirmation grants nothing)."""
    account_verified.send(sender=User, user=user)


def account_has_verified_email(user: User) -> bool:
    from allauth.account.models import EmailAddress

    return EmailAddress.objects.filter(user=user, email__iexact=user.email, verified=True).exists()


def mfa_secrets_reencrypt() -> int:
    """Rewrite every stored two-factor secret with the first of DOS_AI_MFA_ENCRYPTION_KEYS (the
    second half of a key rotation; clear ones from before encryption are encrypted too).
    Returns how many authenticators were rewritten. Each row is locked while it is rewritten,
    so a recovery code used meanwhile is not lost."""
    from allauth.mfa.models import Authenticator

    from accounts import mfa_encryption

    rewritten = 0
    types = (Authenticator.Type.TOTP, Authenticator.Type.RECOVERY_CODES)
    for pk in Authenticator.objects.filter(type__in=types).order_by("pk").values_list("pk", flat=True):
        with transaction.atomic():
            authenticator = Authenticator.objects.select_for_update().filter(pk=pk).first()
            if authenticator is None:
                continue
            data = mfa_encryption.secrets_mapped(authenticator.data, mfa_encryption.reencrypt)
            if data != authenticator.data:
                Authenticator.objects.filter(pk=pk).update(data=data)
                rewritten += 1
    return rewritten
