"""Every write to API keys, and the one lookup the /v1 gateway uses."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db.models import Q
from django.utils import timezone

from accounts.models import SecurityEvent, User
from accounts.notices import notice_send
from accounts.security import SecurityContext, security_event_record
from apikeys.keys import generate_key, hash_key, is_well_formed, key_hint
from apikeys.models import ApiKey

NAME_MAX_LENGTH = 100
# last_used_at is accurate to this interval: one conditional UPDATE at most per key.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def clean_key_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ValidationError("Give the key a name, e.g. “Production backend”.", code="required")
    if len(name) > NAME_MAX_LENGTH:
        raise ValidationError(f"Keep the name to {NAME_MAX_LENGTH} characters or fewer.", code="max_length")
    return name


def api_key_create(*, owner: User, name: str, context: SecurityContext | None = None) -> tuple[ApiKey, str]:
    """Create a key and return it with the raw key, which exists only in this return value.

    Logged in the owner's security log and mailed to them (by name and hint, never the key);
    `context` says who and from where (none: an operator's command)."""
    name = clean_key_name(name)
    raw_key = generate_key()
    api_key = ApiKey.objects.create(owner=owner, name=name, hashed_key=hash_key(raw_key), hint=key_hint(raw_key))
    context = context or SecurityContext()
    security_event_record(user=owner, kind=SecurityEvent.Kind.KEY_CREATED, context=context, detail=str(api_key))
    notice_send(
        user=owner, template="api_key_created", context=context, extra={"key_name": name, "key_hint": api_key.hint}
    )
    return api_key, raw_key


def api_key_revoke(*, api_key: ApiKey, context: SecurityContext | None = None) -> None:
    """Revoke at once. Lookups are not cached, so the next request with this key gets 401."""
    if api_key.revoked_at is None:
        now = timezone.now()
        revoked = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now)
        api_key.revoked_at = now
        if revoked:
            security_event_record(
                user=api_key.owner, kind=SecurityEvent.Kind.KEY_REVOKED, context=context, detail=str(api_key)
            )


def api_key_authenticate(raw_key: str) -> ApiKey | None:
    """Format check, then checksum, then one indexed lookup of an active key (owner joined)."""
    if not is_well_formed(raw_key):
        return None
    return (
        ApiKey.objects.active()
        .select_related("owner")
        .filter(hashed_key=hash_key(raw_key), owner__is_active=True)
        .first()
    )


def api_key_mark_used(*, api_key_id: int, last_used_at: datetime | None) -> None:
    """Record use, throttled: a write only when the stored time is a minute old or more.

    The /v1 path on PostgreSQL does the same inside its reservation statement
    (billing.hotpath) or, for calls that reserve nothing, in dosportal.v1.store.
    """
    now = timezone.now()
    if last_used_at and now - last_used_at < LAST_USED_RESOLUTION:
        return
    ApiKey.objects.filter(pk=api_key_id).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    ).update(last_used_at=now)
