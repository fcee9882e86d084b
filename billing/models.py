"""Money is integer micro-dollars (1 USD = 1,000,000) everywhere: columns, services, pages."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from billing.money import PricedPerMillion


class ServedModel(PricedPerMillion, models.Model):
    """A public model name, the upstream model it maps to, and its prices."""

    class Kind(models.TextChoices):
        CHAT = "chat", "Chat / completions"
        EMBEDDING = "embedding", "Embeddings"

    name = models.CharField(max_length=100, unique=True, help_text="Public name clients send, e.g. dos-ai.")
    upstream_model = models.CharField(
        max_length=200, blank=True, help_text="Model name sent to the upstream server; blank means the same name."
    )
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CHAT)
    input_price_micros_per_million = models.BigIntegerField(
        "input price (micro-USD per 1M tokens)", help_text="500000 = $0.50 per million input tokens."
    )
    output_price_micros_per_million = models.BigIntegerField(
        "output price (micro-USD per 1M tokens)", help_text="1500000 = $1.50 per million output tokens."
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(input_price_micros_per_million__gte=0) & Q(output_price_micros_per_million__gte=0),
                name="servedmodel_prices_non_negative",
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def upstream_name(self) -> str:
        return self.upstream_model or self.name


class UpstreamEndpoint(models.Model):
    """One inference server that serves a model. A model with several is a pool: the gateway
    picks the least busy healthy one and fails over (dosportal.v1.pool). A model with none is
    served by `DOS_AI_UPSTREAM_URL` (every model on every URL listed there)."""

    served_model = models.ForeignKey(ServedModel, on_delete=models.CASCADE, related_name="endpoints")
    base_url = models.URLField(
        "base URL", max_length=300, help_text="OpenAI-compatible base URL, e.g. http://vllm-1:8000/v1"
    )
    api_key = models.CharField(
        "API key", max_length=500, blank=True, help_text="Sent to this server as Authorization: Bearer."
    )
    weight = models.PositiveSmallIntegerField(
        default=1, help_text="Relative share of traffic: a weight-2 server takes twice the requests in flight."
    )
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["served_model", "id"]
        constraints = [
            models.UniqueConstraint(fields=["served_model", "base_url"], name="upstream_endpoint_unique_url"),
            models.CheckConstraint(condition=Q(weight__gte=1) & Q(weight__lte=1000), name="upstream_weight_range"),
        ]

    def __str__(self) -> str:
        return self.base_url


class CreditAccount(models.Model):
    """The balance of one account, kept equal to the sum of its ledger in every transaction.

    `held_micros` is credit reserved by requests in flight (the sum of its CreditHold rows).
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="credit"
    )
    balance_micros = models.BigIntegerField(default=0)
    held_micros = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(balance_micros__gte=0), name="credit_balance_non_negative"),
            models.CheckConstraint(condition=Q(held_micros__gte=0), name="credit_held_non_negative"),
        ]

    def __str__(self) -> str:
        return f"credit of {self.user}"

    @property
    def available_micros(self) -> int:
        return self.balance_micros - self.held_micros


class CreditHold(models.Model):
    """Credit reserved at admission for one /v1 request, deleted when it settles."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="credit_holds")
    amount_micros = models.BigIntegerField()
    request_id = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)
    # The key whose spend limit this hold also counts against (its `spend_held_micros`), if any.
    limited_key = models.ForeignKey(
        "apikeys.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    # What the call would be settled as (billing.settlement.Settlement's fields, and the
    # limiter entry of its concurrency slot), so that a hold whose worker died can be charged
    # for what it delivered by whoever finds it (dosportal.v1.holds, release_stale_holds).
    call = models.JSONField(null=True, blank=True)
    # The call's last sign of life: its worker renews it every few seconds with what the call
    # has delivered so far. A hold whose heartbeat stopped belongs to a worker that died.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    delivered_prompt_tokens = models.PositiveIntegerField(default=0)
    delivered_completion_tokens = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["created_at"], name="credithold_created_idx")]

    def __str__(self) -> str:
        return f"{self.request_id} ({self.amount_micros} µUSD held)"


class UsageRecord(models.Model):
    """One row per /v1 request that was admitted and forwarded (or answered by the dev model)."""

    # Ours, unique per call whatever the client sends; the client's own id is kept beside it.
    request_id = models.CharField(max_length=100, unique=True)
    client_request_id = models.CharField(max_length=100, blank=True, default="")
    # No single-column indexes on the foreign keys: the (user, time) and (key, time) indexes below
    # lead with them and serve the same lookups; every call inserts a row, each index costs it.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage_records", db_index=False
    )
    api_key = models.ForeignKey(
        "apikeys.ApiKey", on_delete=models.PROTECT, related_name="usage_records", db_index=False
    )
    endpoint = models.CharField(max_length=64)
    model = models.CharField(max_length=100)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cost_micros = models.BigIntegerField(default=0, help_text="What was charged, in micro-USD.")
    status_code = models.PositiveSmallIntegerField()
    streamed = models.BooleanField(default=False)
    latency_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["user", "created_at"], name="usage_user_time_idx"),
            models.Index(fields=["api_key", "created_at"], name="usage_key_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.model} {self.status_code}"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class LedgerEntry(models.Model):
    """Append-only: every change of a balance is one row, written with the balance update."""

    class Kind(models.TextChoices):
        GRANT = "grant", "Grant"
        TOPUP = "topup", "Top-up"
        USAGE = "usage", "Usage"
        REFUND = "refund", "Refund"
        ADJUSTMENT = "adjustment", "Adjustment"

    # Indexed by ledger_user_time_idx (user, created_at), which leads with it.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ledger_entries", db_index=False
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount_micros = models.BigIntegerField(help_text="Positive adds credit, negative spends it.")
    balance_after_micros = models.BigIntegerField()
    note = models.CharField(max_length=255, blank=True)
    usage = models.OneToOneField(
        UsageRecord, null=True, blank=True, on_delete=models.PROTECT, related_name="ledger_entry"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "ledger entries"
        indexes = [models.Index(fields=["user", "created_at"], name="ledger_user_time_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.amount_micros} for {self.user}"


class AlertSettings(models.Model):
    """What an account wants to be e-mailed about. No row means the defaults below."""

    DEFAULT_LOW_BALANCE_MICROS = 1_000_000

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="alert_settings"
    )
    low_balance_enabled = models.BooleanField(default=True)
    low_balance_threshold_micros = models.BigIntegerField(default=DEFAULT_LOW_BALANCE_MICROS)
    key_spend_enabled = models.BooleanField(default=True)
    weekly_summary_enabled = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "alert settings"
        constraints = [
            models.CheckConstraint(
                condition=Q(low_balance_threshold_micros__gte=0), name="alertsettings_threshold_non_negative"
            )
        ]

    def __str__(self) -> str:
        return f"alert settings of {self.user}"


class AlertState(models.Model):
    """An alert that was sent and is not due again: once per crossing, not once per request.

    Low balance: the row exists while the account stays below its threshold and is deleted
    when the credit is back above it, which re-arms the alert. Key spend (80% and 100% of a
    key's limit): one row per key and period (`subject`: "<key id>@<period start>"), so a new
    period re-arms it. Weekly summary: one row per summarised ISO week (`subject`, e.g. "2026-W47").
    """

    class Kind(models.TextChoices):
        LOW_BALANCE = "low_balance", "Low balance"
        KEY_SPEND_80 = "key_spend_80", "Key at 80% of its spend limit"
        KEY_SPEND_100 = "key_spend_100", "Key at its spend limit"
        WEEKLY_SUMMARY = "weekly_summary", "Weekly summary"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="alert_states")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    subject = models.CharField(max_length=64, blank=True)
    sent_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "kind", "subject"], name="alertstate_once")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.subject} for {self.user}".replace("  ", " ")
