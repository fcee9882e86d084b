from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import models
from django.db.models import Q


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def active(self) -> ApiKeyQuerySet:
        return self.filter(revoked_at__isnull=True)

    def revoked(self) -> ApiKeyQuerySet:
        return self.filter(revoked_at__isnull=False)


class SpendPeriod(models.TextChoices):
    DAY = "day", "per day"
    WEEK = "week", "per week"
    MONTH = "month", "per month"
    TOTAL = "total", "in total"


NAME_MAX_LENGTH = 100  # a key's name, as every form and command takes it
LEAKED_URL_MAX_LENGTH = 500  # where a leaked key was found, as a report gave it (cut to this)


class RevokedReason(models.TextChoices):
    """Why a key was revoked; empty for a revocation by a person (the dashboard, a command)."""

    NONE = "", "revoked by a person"
    LEAKED = "leaked", "published, revoked automatically"


class ApiKey(models.Model):
    """A named key. Only the SHA-256 of the raw key is stored; revoking keeps the row.

    Settings (all optional; a key with none behaves as if they did not exist): an expiry, a
    spend limit per period, the models it may use, a cap on requests in flight and the client
    addresses it may be used from. `allowed_models` and `allowed_ips` are NULL for "any"; an
    empty list is refused by the services and would allow nothing, never everything.

    The spend counters (`spend_*`) are written only by the /v1 reservation and settlement
    statements (billing.hotpath, billing.services) and by `api_key_update` when the limit
    changes: `spend_spent_micros` is what the key's usage records since `spend_period_start`
    cost, `spend_held_micros` what its calls in flight hold against the limit.
    """

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=NAME_MAX_LENGTH)
    hashed_key = models.CharField(max_length=64, unique=True, editable=False)
    hint = models.CharField(max_length=32, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    expires_at = models.DateTimeField(null=True, blank=True)
    spend_limit_micros = models.BigIntegerField(null=True, blank=True)
    spend_period = models.CharField(max_length=8, choices=SpendPeriod.choices, blank=True, default="")
    spend_period_start = models.DateTimeField(null=True, blank=True, editable=False)
    spend_spent_micros = models.BigIntegerField(default=0, editable=False)
    spend_held_micros = models.BigIntegerField(default=0, editable=False)
    allowed_models = models.JSONField(null=True, blank=True)
    allowed_ips = models.JSONField(null=True, blank=True)
    max_concurrency = models.PositiveIntegerField(null=True, blank=True)
    # A rolled key's old secret, valid until previous_key_expires_at (the grace period).
    previous_hashed_key = models.CharField(max_length=64, null=True, blank=True, unique=True, editable=False)
    previous_key_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    rolled_at = models.DateTimeField(null=True, blank=True, editable=False)
    # A key revoked because it was found published (apikeys.leaks): where, so that the keys
    # list, the owner's email and the 401 its holder gets can all say so.
    revoked_reason = models.CharField(
        max_length=16, choices=RevokedReason.choices, blank=True, default="", editable=False
    )
    leaked_url = models.CharField(max_length=LEAKED_URL_MAX_LENGTH, blank=True, default="", editable=False)
    # Unusual spend (apikeys.unusual): when the key's current crossing of its baseline began (None
    # while it is within it: one alert per crossing), and, with `pause_on_unusual_spend`, the
    # suspension it caused — the gateway refuses a suspended key (403 key_suspended) until resumed.
    pause_on_unusual_spend = models.BooleanField(default=False)
    unusual_spend_since = models.DateTimeField(null=True, blank=True, editable=False)
    suspended_at = models.DateTimeField(null=True, blank=True, editable=False)
    suspended_reason = models.CharField(max_length=300, blank=True, default="", editable=False)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "revoked_at"], name="apikey_owner_active_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "name"], condition=Q(revoked_at__isnull=True), name="apikey_active_name_unique"
            ),
            models.CheckConstraint(
                condition=(Q(spend_limit_micros__isnull=True) & Q(spend_period=""))
                | (Q(spend_limit_micros__gte=0) & Q(spend_period__in=[choice.value for choice in SpendPeriod])),
                name="apikey_spend_limit_has_period",
            ),
            models.CheckConstraint(
                condition=Q(max_concurrency__isnull=True) | Q(max_concurrency__gte=1),
                name="apikey_concurrency_positive",
            ),
            models.CheckConstraint(
                condition=Q(spend_held_micros__gte=0) & Q(spend_spent_micros__gte=0), name="apikey_spend_non_negative"
            ),
        ]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.hint})"

    @property
    def leaked_link(self) -> str:
        """`leaked_url` when it is an http(s) address, safe to link to; "" otherwise (a report
        from the form may say "a paste site"; a `javascript:` URL must never become a link)."""
        return self.leaked_url if self.leaked_url.startswith(("https://", "http://")) else ""

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def is_expired(self, now: dt.datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or dt.datetime.now(dt.UTC))

    def previous_key_valid(self, now: dt.datetime | None = None) -> bool:
        return bool(
            self.previous_hashed_key
            and self.previous_key_expires_at
            and self.previous_key_expires_at > (now or dt.datetime.now(dt.UTC))
        )

    def spent_this_period_micros(self, now: dt.datetime | None = None) -> int:
        """What the key has spent in its current period (0 when the stored period is over)."""
        from apikeys.limits import period_start

        if self.spend_limit_micros is None or self.spend_period_start is None:
            return 0
        if self.spend_period_start < period_start(self.spend_period, now or dt.datetime.now(dt.UTC)):
            return 0
        return self.spend_spent_micros
