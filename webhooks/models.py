"""Webhook endpoints, and the outbox of deliveries to them (durable, in the database).

An event is written as one Delivery row per subscribed endpoint in the same transaction as
the change it reports (webhooks.services.webhook_event_emit), so an event is never lost and
never reported for a change that was rolled back. The server's background task and the
`deliver_webhooks` command send them (webhooks.delivery).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

URL_MAX_LENGTH = 2000
DESCRIPTION_MAX_LENGTH = 200


class Endpoint(models.Model):
    """Where an account's events go. `secret` is the Standard Webhooks signing secret
    (`whsec_` + base64 of 32 random bytes): shown once when made or rolled, then only used to sign."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.CharField(max_length=URL_MAX_LENGTH)
    description = models.CharField(max_length=DESCRIPTION_MAX_LENGTH, blank=True)
    event_types = models.JSONField(default=list)
    secret = models.CharField(max_length=100, editable=False)
    is_active = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=200, blank=True)
    # When deliveries to it started failing without a success since; None while it is healthy.
    failing_since = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.url

    def receives(self, event_type: str) -> bool:
        return event_type in self.event_types


class Delivery(models.Model):
    """One event for one endpoint: the exact body sent (so every retry is byte-identical and
    carries the same `webhook-id`), and how its attempts went."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="deliveries")
    webhook_id = models.CharField(max_length=40)
    event_type = models.CharField(max_length=64)
    payload = models.TextField()
    created_at = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            # The worker's question: the oldest pending delivery of each endpoint.
            models.Index(fields=["endpoint", "id"], condition=Q(status="pending"), name="delivery_pending_idx"),
            models.Index(fields=["next_attempt_at"], condition=Q(status="pending"), name="delivery_due_idx"),
        ]
        verbose_name_plural = "deliveries"

    def __str__(self) -> str:
        return f"{self.event_type} {self.webhook_id} → {self.endpoint_id}"

    @property
    def error_note(self) -> str:
        """The last error, unless the status code already says it all."""
        return "" if self.last_error == f"HTTP {self.last_status_code}" else self.last_error
