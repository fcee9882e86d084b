"""Every write to API keys, and the lookup of a key by its hash."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from accounts.models import SecurityEvent, User
from accounts.notices import notice_send
from accounts.security import SecurityContext, security_event_record
from apikeys.keys import generate_key, hash_key, is_well_formed, key_hint
from apikeys.limits import PERIODS, clean_networks, period_start
from apikeys.models import LEAKED_URL_MAX_LENGTH, ApiKey, RevokedReason
from billing.models import ServedModel
from webhooks.services import api_key_data, webhook_event_emit

MAX_SPEND_LIMIT_MICROS = 10**15  # $1,000,000,000
MAX_CONCURRENCY = 10_000
MAX_ALLOWED_IPS = 100
MAX_ROLL_GRACE = dt.timedelta(days=30)
# last_used_at is accurate to this interval: one conditional UPDATE at most per key.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def check_key_name_free(*, owner: User, name: str, exclude_id: int | None = None) -> None:
    """A ValidationError when another active key of `owner` (not `exclude_id`) has this name:
    names are unique among a user's active keys. The forms check it on their name field; the
    services check it again in their transaction."""
    taken = ApiKey.objects.active().filter(owner=owner, name=name)
    if exclude_id is not None:
        taken = taken.exclude(pk=exclude_id)
    if taken.exists():
        raise ValidationError(f"You already have an active key named “{name}”. Choose another name.", code="unique")


def _check_name_free(*, owner: User, name: str, exclude_id: int | None = None) -> None:
    """check_key_name_free, its error keyed by field as the other settings' errors are."""
    try:
        check_key_name_free(owner=owner, name=name, exclude_id=exclude_id)
    except ValidationError as error:
        raise ValidationError({"name": error.error_list}) from None


@dataclass(frozen=True, slots=True)
class KeySettings:
    """A key's optional settings; the defaults are "none": no expiry, no limit, every model,
    no cap, any address. `allowed_models`/`allowed_ips` None means all; a list must name some."""

    expires_at: dt.datetime | None = None
    spend_limit_micros: int | None = None
    spend_period: str = ""
    allowed_models: list[str] | None = None
    max_concurrency: int | None = None
    allowed_ips: list[str] | None = None
    pause_on_unusual_spend: bool = False


def clean_key_settings(key_settings: KeySettings, *, now: dt.datetime | None = None) -> KeySettings:
    """The settings validated and normalised; a ValidationError keyed by field otherwise."""
    now = now or timezone.now()
    problems: dict[str, str] = {}
    changes: dict[str, object] = {}
    if key_settings.expires_at is not None and key_settings.expires_at <= now:
        problems["expires_at"] = "Choose an expiry time in the future."
    if key_settings.spend_limit_micros is not None:
        if key_settings.spend_limit_micros < 0:
            problems["spend_limit"] = "The spend limit cannot be negative."
        elif key_settings.spend_limit_micros > MAX_SPEND_LIMIT_MICROS:
            problems["spend_limit"] = "Keep the spend limit under $1,000,000,000."
        if key_settings.spend_period not in PERIODS:
            problems["spend_period"] = "Choose the period: day, week, month or total."
    else:
        changes["spend_period"] = ""
    if key_settings.allowed_models is not None:
        names = list(dict.fromkeys(name.strip() for name in key_settings.allowed_models if name.strip()))
        known = set(ServedModel.objects.filter(name__in=names).values_list("name", flat=True))
        unknown = [name for name in names if name not in known]
        if not names:
            problems["allowed_models"] = "Choose at least one model, or allow all models."
        elif unknown:
            problems["allowed_models"] = "No such model: " + ", ".join(unknown[:5]) + "."
        changes["allowed_models"] = names
    if key_settings.max_concurrency is not None and not 1 <= key_settings.max_concurrency <= MAX_CONCURRENCY:
        problems["max_concurrency"] = f"Allow between 1 and {MAX_CONCURRENCY:,} requests in flight."
    if key_settings.allowed_ips is not None:
        try:
            networks = clean_networks(key_settings.allowed_ips)
        except ValueError as error:
            problems["allowed_ips"] = f"Not an IP address or CIDR range: {str(error).split(': ', 1)[-1]}."
        else:
            if not networks:
                problems["allowed_ips"] = "List at least one address or range, or allow any address."
            elif len(networks) > MAX_ALLOWED_IPS:
                problems["allowed_ips"] = f"List at most {MAX_ALLOWED_IPS} addresses or ranges."
            changes["allowed_ips"] = networks
    if problems:
        raise ValidationError(problems)
    return dataclasses.replace(key_settings, **changes)  # type: ignore[arg-type]


@transaction.atomic
def api_key_create(
    *, owner: User, name: str, settings: KeySettings | None = None, context: SecurityContext | None = None
) -> tuple[ApiKey, str]:
    """Create a key and return it with the raw key, which exists only in this return value.

    Logged in the owner's security log and mailed to them (by name and hint, never the key);
    `context` says who and from where (none: an operator's command). `name` is as a form
    cleaned it (apikeys.forms.key_name_field); that it is free is checked here, in the
    transaction."""
    key_settings = clean_key_settings(settings or KeySettings())
    _check_name_free(owner=owner, name=name)
    raw_key = generate_key()
    now = timezone.now()
    spend_start = period_start(key_settings.spend_period, now) if key_settings.spend_limit_micros is not None else None
    try:
        with transaction.atomic():
            api_key = ApiKey.objects.create(
                owner=owner,
                name=name,
                hashed_key=hash_key(raw_key),
                hint=key_hint(raw_key),
                spend_period_start=spend_start,
                **dataclasses.asdict(key_settings),
            )
    except IntegrityError:  # the same name created at the same moment
        _check_name_free(owner=owner, name=name)
        raise
    context = context or SecurityContext()
    security_event_record(user=owner, kind=SecurityEvent.Kind.KEY_CREATED, context=context, detail=str(api_key))
    webhook_event_emit(owner_id=owner.pk, event_type="api_key.created", data=api_key_data(api_key))
    notice_send(
        user=owner, template="api_key_created", context=context, extra={"key_name": name, "key_hint": api_key.hint}
    )
    return api_key, raw_key


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@transaction.atomic
def api_key_update(
    *,
    api_key: ApiKey,
    name: str = UNSET,
    expires_at: dt.datetime | None = UNSET,
    spend_limit_micros: int | None = UNSET,
    spend_period: str = UNSET,
    allowed_models: list[str] | None = UNSET,
    max_concurrency: int | None = UNSET,
    allowed_ips: list[str] | None = UNSET,
    pause_on_unusual_spend: bool = UNSET,
    context: SecurityContext | None = None,
) -> ApiKey:
    """Change a key's name and settings; what is not given keeps its value.

    A new spend limit or period starts counting from the key's usage records of the current
    period (so changing the period never forgets, nor double-counts, what was spent); the
    key row is locked meanwhile, so a settlement cannot slip between the sum and the write.
    """
    key = ApiKey.objects.select_for_update().get(pk=api_key.pk)
    if key.revoked_at is not None:
        raise ValidationError("This key is revoked; its settings can no longer change.")
    given = {
        field: value
        for field, value in {
            "expires_at": expires_at,
            "spend_limit_micros": spend_limit_micros,
            "spend_period": spend_period,
            "allowed_models": allowed_models,
            "max_concurrency": max_concurrency,
            "allowed_ips": allowed_ips,
            "pause_on_unusual_spend": pause_on_unusual_spend,
        }.items()
        if value is not UNSET
    }
    current = KeySettings(**{field.name: getattr(key, field.name) for field in dataclasses.fields(KeySettings)})
    wanted = dataclasses.replace(current, **given)
    now = timezone.now()
    if wanted.expires_at == current.expires_at:
        cleaned = clean_key_settings(dataclasses.replace(wanted, expires_at=None), now=now)
        cleaned = dataclasses.replace(cleaned, expires_at=current.expires_at)  # an old expiry may stay as it is
    else:
        cleaned = clean_key_settings(wanted, now=now)
    update_fields = [field.name for field in dataclasses.fields(KeySettings)]
    if name is not UNSET:
        if name != key.name:
            _check_name_free(owner=key.owner, name=name, exclude_id=key.pk)
        key.name = name
        update_fields.append("name")
    limit_changed = (cleaned.spend_limit_micros, cleaned.spend_period) != (
        current.spend_limit_micros,
        current.spend_period,
    )
    for field, value in dataclasses.asdict(cleaned).items():
        setattr(key, field, value)
    if limit_changed and cleaned.spend_limit_micros is not None:
        key.spend_period_start = period_start(cleaned.spend_period, now)
        key.spend_spent_micros = (
            key.usage_records.filter(created_at__gte=key.spend_period_start).aggregate(total=Sum("cost_micros"))[
                "total"
            ]
            or 0
        )
        update_fields += ["spend_period_start", "spend_spent_micros"]
    if limit_changed:
        key.spend_held_micros = _in_flight_micros(key) if cleaned.spend_limit_micros is not None else 0
        update_fields.append("spend_held_micros")
    key.save(update_fields=update_fields)
    security_event_record(
        user=key.owner, kind=SecurityEvent.Kind.KEY_UPDATED, context=context or SecurityContext(), detail=str(key)
    )
    return key


def _in_flight_micros(key: ApiKey) -> int:
    """What the key's calls in flight hold, whether or not they were admitted under a limit: a
    limit set while they run counts what they may still be charged (a settlement releases a
    hold from the key's held spend whenever the key has a limit by then: billing.hotpath)."""
    from billing.models import CreditHold

    held = CreditHold.objects.filter(call__api_key_id=key.pk).aggregate(total=Sum("amount_micros"))["total"]
    return held or 0


@transaction.atomic
def api_key_roll(
    *, api_key: ApiKey, grace: dt.timedelta = dt.timedelta(0), context: SecurityContext | None = None
) -> tuple[ApiKey, str]:
    """A new secret for the same key (same id, name, settings, usage and spend period); the old
    secret keeps working for `grace`, then fails like an unknown key. Rolling again within a
    grace period ends the earlier old secret at once: only the latest old secret is kept."""
    if grace < dt.timedelta(0) or grace > MAX_ROLL_GRACE:
        raise ValidationError(f"The grace period must be between 0 and {MAX_ROLL_GRACE.days} days.")
    key = ApiKey.objects.select_for_update().get(pk=api_key.pk)
    if key.revoked_at is not None:
        raise ValidationError("This key is revoked; it cannot be rolled.")
    raw_key = generate_key()
    now = timezone.now()
    key.previous_hashed_key = key.hashed_key if grace else None
    key.previous_key_expires_at = now + grace if grace else None
    key.hashed_key = hash_key(raw_key)
    key.hint = key_hint(raw_key)
    key.rolled_at = now
    key.save(update_fields=["previous_hashed_key", "previous_key_expires_at", "hashed_key", "hint", "rolled_at"])
    security_event_record(
        user=key.owner,
        kind=SecurityEvent.Kind.KEY_ROLLED,
        context=context or SecurityContext(),
        detail=f"{key} (old secret valid for {grace})" if grace else str(key),
    )
    webhook_event_emit(
        owner_id=key.owner_id,
        event_type="api_key.rolled",
        data={**api_key_data(key), "previous_secret_valid_until": key.previous_key_expires_at},
    )
    return key, raw_key


def api_key_revoke(*, api_key: ApiKey, context: SecurityContext | None = None, leaked_url: str | None = None) -> bool:
    """Revoke at once. Lookups are not cached, so the next request with this key gets 401.

    `leaked_url`: the key was found published there (apikeys.leaks) — stored with the key so
    the keys list and the 401 say why, and logged as a leak rather than a revocation.
    True when this call revoked it (False: it already was, and nothing changed)."""
    if api_key.revoked_at is not None:
        return False
    now = timezone.now()
    changes: dict[str, object] = {"revoked_at": now}
    if leaked_url is not None:
        changes |= {"revoked_reason": RevokedReason.LEAKED, "leaked_url": leaked_url[:LEAKED_URL_MAX_LENGTH]}
    with transaction.atomic():  # the revocation and its webhook event, together
        revoked = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(**changes)
        for field, value in changes.items():
            setattr(api_key, field, value)
        if revoked:
            kind = SecurityEvent.Kind.KEY_REVOKED if leaked_url is None else SecurityEvent.Kind.KEY_LEAKED
            detail = str(api_key) if leaked_url is None else f"{api_key}, found at {api_key.leaked_url}"
            security_event_record(user=api_key.owner, kind=kind, context=context, detail=detail)
            if leaked_url is None:
                webhook_event_emit(owner_id=api_key.owner_id, event_type="api_key.revoked", data=api_key_data(api_key))
            else:
                webhook_event_emit(
                    owner_id=api_key.owner_id,
                    event_type="api_key.leaked",
                    data={**api_key_data(api_key), "found_at": api_key.leaked_url, "revoked": True},
                )
    return bool(revoked)


def api_key_by_hash(hashed_key: str) -> ApiKey | None:
    """One indexed lookup of an active key of an active account (owner joined), by its secret's
    SHA-256 or, within a roll's grace period, its previous one. The /v1 gateway's lookup on
    SQLite; on PostgreSQL it runs the same query as SQL (dosportal.v1.store)."""
    return (
        ApiKey.objects.active()
        .select_related("owner")
        .filter(
            Q(hashed_key=hashed_key) | Q(previous_hashed_key=hashed_key, previous_key_expires_at__gt=timezone.now()),
            owner__is_active=True,
            suspended_at__isnull=True,  # the 401 path tells it apart (apikeys.refusals)
        )
        .first()
    )


def api_key_authenticate(raw_key: str) -> ApiKey | None:
    """Format check, then checksum, then the lookup by hash."""
    return api_key_by_hash(hash_key(raw_key)) if is_well_formed(raw_key) else None


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


def describe_key_settings(api_key: ApiKey, now: dt.datetime | None = None) -> list[str]:
    """A key's settings in words, one line each (for commands and the admin)."""
    from billing.money import exact_places, format_usd

    now = now or timezone.now()

    def when(moment: dt.datetime) -> str:
        return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    lines = []
    if api_key.expires_at is None:
        lines.append("expires: never")
    else:
        lines.append(f"{'expired' if api_key.is_expired(now) else 'expires'}: {when(api_key.expires_at)}")
    limit = api_key.spend_limit_micros
    if limit is None:
        lines.append("spend limit: none")
    else:
        spent = api_key.spent_this_period_micros(now)
        places = max(exact_places(limit), exact_places(spent))
        period = "in total" if api_key.spend_period == "total" else f"per {api_key.spend_period} (UTC)"
        lines.append(f"spend limit: {format_usd(limit, places)} {period}, spent {format_usd(spent, places)}")
    models = api_key.allowed_models
    lines.append("models: all" if models is None else "models: " + ", ".join(models))
    cap = api_key.max_concurrency
    lines.append("max concurrent requests: " + ("no limit" if cap is None else str(cap)))
    ips = api_key.allowed_ips
    lines.append("allowed IPs: any" if ips is None else "allowed IPs: " + ", ".join(ips))
    if api_key.previous_key_valid(now):
        lines.append(f"old secret valid until: {when(api_key.previous_key_expires_at)}")
    # Only when they apply, so the lines of an ordinary key read as they always have.
    if api_key.pause_on_unusual_spend:
        lines.append("pause on unusual spend: on")
    if api_key.suspended_at is not None:
        lines.append(f"suspended since {when(api_key.suspended_at)}: {api_key.suspended_reason}")
    if api_key.revoked_reason == RevokedReason.LEAKED:
        lines.append(f"revoked automatically: found at {api_key.leaked_url}")
    return lines
