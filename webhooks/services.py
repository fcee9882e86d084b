"""Every write to webhook endpoints and their outbox.

Events are emitted by the services that make the change (apikeys.services, apikeys.leaks,
billing.services, billing.alerts) through `webhook_event_emit`, inside their transaction.
Payloads follow Standard Webhooks' suggested shape, `{"type", "timestamp", "data"}`, and
never carry a raw key: keys are named by id, name and hint.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from webhooks.events import EVENT_TYPES, TEST_EVENT
from webhooks.models import Delivery, Endpoint
from webhooks.netguard import UrlRefused, resolve

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
MAX_ENDPOINTS = 20  # per account


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes (the HMAC key)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def new_webhook_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def _clean(*, url: str, event_types: list[str]) -> None:
    problems = {}
    try:
        resolve(url)
    except UrlRefused as refusal:
        problems["url"] = str(refusal)
    unknown = [name for name in event_types if name not in EVENT_TYPES]
    if not event_types:
        problems["event_types"] = "Choose at least one event."
    elif unknown:
        problems["event_types"] = "No such event: " + ", ".join(unknown[:5]) + "."
    if problems:
        raise ValidationError(problems)


def endpoint_create(*, owner: User, url: str, description: str, event_types: list[str]) -> Endpoint:
    """A new endpoint with a new secret (`endpoint.secret`, for the one page that shows it)."""
    _clean(url=url, event_types=event_types)
    if owner.webhook_endpoints.count() >= MAX_ENDPOINTS:
        raise ValidationError(f"An account can have at most {MAX_ENDPOINTS} webhook endpoints.")
    return Endpoint.objects.create(
        owner=owner, url=url, description=description, event_types=list(event_types), secret=new_secret()
    )


def endpoint_update(*, endpoint: Endpoint, url: str, description: str, event_types: list[str]) -> Endpoint:
    _clean(url=url, event_types=event_types)
    endpoint.url, endpoint.description, endpoint.event_types = url, description, list(event_types)
    endpoint.save(update_fields=["url", "description", "event_types"])
    return endpoint


def endpoint_roll_secret(*, endpoint: Endpoint) -> str:
    """A new signing secret, used from the next attempt on (retries of older events included)."""
    endpoint.secret = new_secret()
    endpoint.save(update_fields=["secret"])
    return endpoint.secret


def endpoint_enable(*, endpoint: Endpoint) -> None:
    """Turn a disabled endpoint back on; what it missed was kept and is sent again, in order."""
    endpoint.is_active, endpoint.disabled_reason, endpoint.failing_since = True, "", None
    endpoint.save(update_fields=["is_active", "disabled_reason", "failing_since"])
    endpoint.deliveries.filter(status=Delivery.Status.PENDING).update(next_attempt_at=timezone.now())


def _payload(event_type: str, data: dict[str, Any], at: dt.datetime) -> str:
    timestamp = at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    document = {"type": event_type, "timestamp": timestamp, "data": data}
    return json.dumps(document, separators=(",", ":"), cls=DjangoJSONEncoder)  # datetimes as ISO 8601


def webhook_event_emit(*, owner_id: int, event_type: str, data: dict[str, Any]) -> int:
    """Queue `event_type` for each active endpoint of the account that subscribed to it; how
    many. Call it inside the transaction of the change, so both happen or neither does."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event {event_type!r}")
    endpoints = [
        endpoint
        for endpoint in Endpoint.objects.filter(owner_id=owner_id, is_active=True).only("id", "event_types")
        if endpoint.receives(event_type)
    ]
    if not endpoints:
        return 0
    now = timezone.now()
    Delivery.objects.bulk_create(
        Delivery(
            endpoint=endpoint,
            webhook_id=new_webhook_id(),
            event_type=event_type,
            payload=_payload(event_type, data, now),
            created_at=now,
            next_attempt_at=now,
        )
        for endpoint in endpoints
    )
    return len(endpoints)


def webhook_test_send(*, endpoint: Endpoint) -> Delivery:
    """ "Send a test event": queued like any other, so it shows in the log and keeps the order."""
    now = timezone.now()
    data = {"message": "A test event from the DOS AI dashboard.", "endpoint_id": endpoint.pk}
    return Delivery.objects.create(
        endpoint=endpoint,
        webhook_id=new_webhook_id(),
        event_type=TEST_EVENT,
        payload=_payload(TEST_EVENT, data, now),
        created_at=now,
        next_attempt_at=now,
    )


@transaction.atomic
def delivery_send_again(*, delivery: Delivery) -> Delivery:
    """ "Send again": the same event with the same `webhook-id` (a receiver that already has it
    can tell), queued now. A delivery being sent at this moment is left to finish."""
    locked = Delivery.objects.select_for_update(skip_locked=True).filter(pk=delivery.pk).first()
    if locked is None:
        return delivery
    locked.status, locked.next_attempt_at, locked.last_error = Delivery.Status.PENDING, timezone.now(), ""
    locked.save(update_fields=["status", "next_attempt_at", "last_error"])
    return locked


def api_key_data(api_key: Any) -> dict[str, Any]:
    """A key in a payload: never its secret."""
    return {"id": api_key.pk, "name": api_key.name, "hint": api_key.hint}
