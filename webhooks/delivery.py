"""Sending the outbox: at least once, in order per endpoint, never twice at the same time.

Each attempt claims one delivery with `SELECT … FOR UPDATE SKIP LOCKED`: the oldest pending
delivery of an endpoint (its head), due now, whose row no other worker holds. The row stays
locked while it is sent, so another worker (another process, the cron command) skips it —
and skips that endpoint entirely, since a later delivery is never the head while an earlier
one is pending: deliveries to one endpoint go out one at a time, in the order of their events.
A worker that dies mid-send releases the lock with its connection; the delivery is sent
again (at least once — receivers de-duplicate by `webhook-id`, which never changes).

Signing follows Standard Webhooks with its reference package (`standardwebhooks`):
`webhook-id`, `webhook-timestamp` (the attempt's time, so receivers' five-minute tolerance
holds for retries), `webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>`.

A 2xx answer delivers. Anything else — another status, a redirect (never followed), a
refused address (webhooks.netguard), a network error or time-out — is a failed attempt,
retried after RETRY_PAUSES (the first within a minute, then growing, about a day in all);
after the last the delivery is marked failed and the next one goes. An endpoint whose
deliveries have failed for DISABLE_AFTER without one success is disabled and its owner told.
"""

from __future__ import annotations

import datetime as dt
import http.client
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from accounts.notices import notice_send
from accounts.security import SecurityContext
from webhooks.models import Delivery, Endpoint
from webhooks.netguard import UrlRefused, post, resolve

logger = logging.getLogger("webhooks.delivery")

RETRY_PAUSES = [
    dt.timedelta(seconds=30),
    dt.timedelta(minutes=2),
    dt.timedelta(minutes=10),
    dt.timedelta(minutes=30),
    dt.timedelta(hours=1),
    dt.timedelta(hours=3),
    dt.timedelta(hours=6),
    dt.timedelta(hours=12),
]  # 9 attempts over about 23 hours
DISABLE_AFTER = dt.timedelta(days=3)
USER_AGENT = "DOS-AI-Webhooks/1"


@dataclass(frozen=True)
class DeliveryRun:
    delivered: int
    failed_attempts: int


def _due_heads(now: dt.datetime):  # -> QuerySet[Delivery]
    earlier_pending = Delivery.objects.filter(
        endpoint_id=OuterRef("endpoint_id"), status=Delivery.Status.PENDING, id__lt=OuterRef("id")
    )
    return (
        Delivery.objects.filter(status=Delivery.Status.PENDING, next_attempt_at__lte=now, endpoint__is_active=True)
        .exclude(Exists(earlier_pending))
        .order_by("next_attempt_at", "id")
    )


def signed_headers(endpoint: Endpoint, delivery: Delivery) -> dict[str, str]:
    sent_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    signature = Webhook(endpoint.secret).sign(delivery.webhook_id, sent_at, delivery.payload)
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": delivery.webhook_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signature,
    }


def _attempt(endpoint: Endpoint, delivery: Delivery) -> tuple[int | None, str]:
    """(status code or None, error text); a 2xx with "" is a success."""
    try:
        target = resolve(endpoint.url)
        answer = post(
            target,
            delivery.payload.encode(),
            signed_headers(endpoint, delivery),
            timeout=settings.DOS_AI_WEBHOOKS_TIMEOUT,
        )
    except UrlRefused as refusal:
        return None, f"Not sent: {refusal}"
    except TimeoutError:
        return None, f"No answer within {settings.DOS_AI_WEBHOOKS_TIMEOUT:g} seconds."
    except (OSError, http.client.HTTPException) as error:
        return None, f"Could not connect: {error}"[:300]
    if 200 <= answer.status < 300:
        return answer.status, ""
    if 300 <= answer.status < 400:
        return answer.status, f"HTTP {answer.status}: redirects are not followed."
    return answer.status, f"HTTP {answer.status}"


def deliver_one(*, now: dt.datetime | None = None) -> Delivery | None:
    """Claim and send one due delivery; it, or None when nothing is due."""
    now = now or timezone.now()
    with transaction.atomic():
        delivery = _due_heads(now).select_for_update(skip_locked=True, of=("self",)).select_related("endpoint").first()
        if delivery is None:
            return None
        endpoint = delivery.endpoint
        status_code, error = _attempt(endpoint, delivery)
        delivery.attempts += 1
        delivery.last_attempt_at, delivery.last_status_code, delivery.last_error = now, status_code, error
        if not error:
            delivery.status, delivery.delivered_at, delivery.next_attempt_at = Delivery.Status.DELIVERED, now, None
            if endpoint.failing_since is not None:
                Endpoint.objects.filter(pk=endpoint.pk).update(failing_since=None)
        else:
            if delivery.attempts <= len(RETRY_PAUSES):
                delivery.next_attempt_at = now + RETRY_PAUSES[delivery.attempts - 1]
            else:
                delivery.status, delivery.next_attempt_at = Delivery.Status.FAILED, None
            _note_failure(endpoint, now)
        delivery.save()
    return delivery


def _note_failure(endpoint: Endpoint, now: dt.datetime) -> None:
    if endpoint.failing_since is None:
        Endpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=True).update(failing_since=now)
        return
    if now - endpoint.failing_since < DISABLE_AFTER:
        return
    reason = f"Disabled on {now:%Y-%m-%d}: every delivery failed since {endpoint.failing_since:%Y-%m-%d %H:%M} UTC."
    disabled = Endpoint.objects.filter(pk=endpoint.pk, is_active=True).update(is_active=False, disabled_reason=reason)
    if disabled:
        logger.warning("webhook endpoint %s disabled after failing since %s", endpoint.pk, endpoint.failing_since)
        transaction.on_commit(
            lambda: notice_send(
                user=endpoint.owner,
                template="webhook_disabled",
                context=SecurityContext(),
                extra={"endpoint_url": endpoint.url, "failing_since": endpoint.failing_since},
            )
        )


def deliver_due(*, now: dt.datetime | None = None, limit: int = 500) -> DeliveryRun:
    """Send what is due, one at a time, until nothing is (or `limit` attempts were made)."""
    delivered = failed = 0
    for _ in range(limit):
        delivery = deliver_one(now=now)
        if delivery is None:
            break
        if delivery.status == Delivery.Status.DELIVERED:
            delivered += 1
        else:
            failed += 1
    return DeliveryRun(delivered, failed)
