"""Delivery: signed per Standard Webhooks, retried with the same id, in order, once at a time,
and never to a private address unless allowed. The receiver is a real HTTP server and checks
signatures with the `standardwebhooks` package, as a customer's receiver would."""

from __future__ import annotations

import datetime as dt
import json
import threading
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from accounts.models import User
from apikeys.services import api_key_create, api_key_revoke
from billing.alerts import alerts_send
from billing.services import credits_grant
from dosportal.testing.gateway import wait_for
from webhooks.delivery import RETRY_PAUSES, deliver_due, deliver_one
from webhooks.events import EVENT_TYPES
from webhooks.models import Delivery, Endpoint
from webhooks.services import endpoint_create, webhook_test_send
from webhooks.tests.conftest import Receiver

pytestmark = pytest.mark.django_db


def endpoint_for(owner: User, receiver: Receiver, events: list[str] | None = None) -> Endpoint:
    return endpoint_create(owner=owner, url=receiver.url, description="", event_types=events or list(EVENT_TYPES))


def verified(endpoint: Endpoint, received) -> dict:
    """What a receiver gets after checking the signature with the reference library."""
    return Webhook(endpoint.secret).verify(received.body, received.headers)


def test_events_are_signed_retried_with_the_same_id_and_delivered_once_in_order(
    owner: User, receiver: Receiver, allow_private: None
) -> None:
    endpoint = endpoint_for(owner, receiver)
    api_key, raw_key = api_key_create(owner=owner, name="CI")
    api_key_revoke(api_key=api_key)
    receiver.statuses = [500, 503]
    start = timezone.now()

    first = deliver_due(now=start)
    head = Delivery.objects.get(event_type="api_key.created")
    assert (first.delivered, first.failed_attempts) == (0, 1)
    assert head.next_attempt_at == start + RETRY_PAUSES[0]
    assert RETRY_PAUSES[0] <= dt.timedelta(minutes=1)
    assert len(receiver.received) == 1  # the revocation waits behind the failing creation

    second = deliver_due(now=start + RETRY_PAUSES[0])
    third = deliver_due(now=start + RETRY_PAUSES[0] + RETRY_PAUSES[1])

    assert (second.delivered, second.failed_attempts) == (0, 1)
    assert (third.delivered, third.failed_attempts) == (2, 0)
    assert [verified(endpoint, r)["type"] for r in receiver.received] == [
        "api_key.created",
        "api_key.created",
        "api_key.created",
        "api_key.revoked",
    ]
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert ids[0] == ids[1] == ids[2] != ids[3]
    assert receiver.received[0].body == receiver.received[2].body
    assert verified(endpoint, receiver.received[3])["data"] == {"id": api_key.pk, "name": "CI", "hint": api_key.hint}
    assert all(raw_key not in r.body.decode() for r in receiver.received)
    created, revoked = Delivery.objects.order_by("id")
    assert (created.status, created.attempts, created.last_status_code) == ("delivered", 3, 200)
    assert (revoked.status, revoked.attempts) == ("delivered", 1)
    assert deliver_due(now=start + dt.timedelta(days=2)).delivered == 0  # nothing is sent twice


def test_a_signature_with_another_secret_does_not_verify(owner: User, receiver: Receiver, allow_private) -> None:
    endpoint = endpoint_for(owner, receiver)
    webhook_test_send(endpoint=endpoint)
    deliver_due()
    other = endpoint_for(owner, receiver)

    with pytest.raises(Exception, match="No matching signature"):
        verified(other, receiver.received[0])
    assert verified(endpoint, receiver.received[0])["type"] == "webhook.test"


def test_only_subscribed_events_are_queued_and_only_for_the_owner(
    owner: User, outsider: User, receiver: Receiver, allow_private
) -> None:
    endpoint_for(owner, receiver, events=["credit.granted"])
    endpoint_for(outsider, receiver)

    api_key_create(owner=owner, name="Not subscribed")
    credits_grant(user=owner, amount_micros=2_000_000, note="top-up")

    [delivery] = Delivery.objects.all()
    assert delivery.event_type == "credit.granted"
    assert json.loads(delivery.payload)["data"]["amount_micros"] == 2_000_000


def test_a_low_balance_alert_is_also_a_webhook(owner: User, receiver: Receiver, allow_private, mailoutbox) -> None:
    from billing.selectors import credit_account_for

    balance = credit_account_for(user=owner).balance_micros  # the sign-up credit
    credits_grant(user=owner, amount_micros=100 - balance, kind="adjustment")  # far below the $1.00 threshold
    endpoint_for(owner, receiver, events=["balance.low"])

    alerts_send()
    alerts_send()  # once per crossing

    [delivery] = Delivery.objects.all()
    assert delivery.event_type == "balance.low"
    assert json.loads(delivery.payload)["data"]["available_micros"] == 100


def test_a_redirect_is_not_followed_but_failed(owner: User, receiver: Receiver, allow_private) -> None:
    endpoint = endpoint_for(owner, receiver)
    receiver.statuses = [302]
    delivery = webhook_test_send(endpoint=endpoint)

    deliver_due()

    delivery.refresh_from_db()
    assert (delivery.status, delivery.last_status_code) == ("pending", 302)
    assert delivery.last_error == "HTTP 302: redirects are not followed."
    assert len(receiver.received) == 1


def test_after_the_last_retry_a_delivery_fails_and_the_next_one_goes(
    owner: User, receiver: Receiver, allow_private
) -> None:
    endpoint = endpoint_for(owner, receiver)
    stuck, following = webhook_test_send(endpoint=endpoint), webhook_test_send(endpoint=endpoint)
    receiver.statuses = [500] * (len(RETRY_PAUSES) + 1)
    now = timezone.now()
    for pause in [dt.timedelta(0), *RETRY_PAUSES]:
        now += pause
        deliver_due(now=now)

    stuck.refresh_from_db()
    following.refresh_from_db()
    assert (stuck.status, stuck.attempts) == ("failed", len(RETRY_PAUSES) + 1)
    assert (following.status, following.attempts) == ("delivered", 1)


@pytest.mark.django_db(transaction=True)  # the email goes out once the disabling commits
def test_an_endpoint_failing_for_days_is_disabled_and_its_owner_told(
    owner: User, receiver: Receiver, allow_private, mailoutbox
) -> None:
    endpoint = endpoint_for(owner, receiver)
    receiver.statuses = [500] * 20
    webhook_test_send(endpoint=endpoint)
    now = timezone.now()
    deliver_due(now=now)
    webhook_test_send(endpoint=endpoint)
    Delivery.objects.update(next_attempt_at=now)

    deliver_due(now=now + dt.timedelta(days=3, minutes=1))

    endpoint.refresh_from_db()
    assert not endpoint.is_active
    assert endpoint.disabled_reason.startswith("Disabled on ")
    [mail] = [m for m in mailoutbox if "webhook" in m.subject]
    assert mail.to == [owner.email]
    assert endpoint.url in mail.body
    assert deliver_due(now=now + dt.timedelta(days=4)).failed_attempts == 0  # a disabled endpoint gets nothing


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://100.64.0.1/hook",
        "http://0.0.0.0/hook",
    ],
)
def test_private_loopback_and_metadata_addresses_are_refused(owner: User, url: str) -> None:
    with pytest.raises(ValidationError) as refused:
        endpoint_create(owner=owner, url=url, description="", event_types=["api_key.created"])

    assert "webhooks go only to public addresses" in refused.value.message_dict["url"][0]
    assert not Endpoint.objects.exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/hook", "Use an http:// or https:// URL."),
        ("https://user:pw@example.com/hook", "Leave credentials out of the URL; verify the signature instead."),
        ("http://example.com:99999/", "This is not a valid URL."),
    ],
)
def test_urls_that_are_not_plain_http_are_refused(owner: User, url: str, message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        endpoint_create(owner=owner, url=url, description="", event_types=["api_key.created"])

    assert refused.value.message_dict["url"] == [message]


def test_the_address_is_checked_again_when_sending(owner: User, receiver: Receiver, settings) -> None:
    settings.DOS_AI_WEBHOOKS_ALLOW_PRIVATE = True
    endpoint = endpoint_for(owner, receiver)
    delivery = webhook_test_send(endpoint=endpoint)
    settings.DOS_AI_WEBHOOKS_ALLOW_PRIVATE = False

    deliver_due()

    delivery.refresh_from_db()
    assert delivery.status == "pending"
    assert delivery.last_error.startswith("Not sent: 127.0.0.1 resolves to 127.0.0.1, a private")
    assert receiver.received == []


@pytest.mark.django_db(transaction=True)
def test_two_workers_never_send_one_delivery_at_the_same_time(owner: User, receiver: Receiver, allow_private) -> None:
    endpoint = endpoint_for(owner, receiver)
    webhook_test_send(endpoint=endpoint)
    webhook_test_send(endpoint=endpoint)
    receiver.hold = True
    results: list[object] = []

    def worker() -> None:
        try:
            results.append(deliver_one())
        finally:
            connection.close()

    sending = threading.Thread(target=worker)
    sending.start()
    assert receiver.arrived.wait(10)
    other = threading.Thread(target=worker)
    other.start()
    other.join(10)  # the first delivery is locked, and the second waits behind it: nothing to claim
    receiver.release.set()
    sending.join(10)

    assert results[0] is None
    assert len(receiver.received) == 1
    assert Delivery.objects.filter(status="delivered").count() == 1


def test_the_cron_command_sends_what_is_due(owner: User, receiver: Receiver, allow_private) -> None:
    endpoint = endpoint_for(owner, receiver)
    webhook_test_send(endpoint=endpoint)
    out = StringIO()

    call_command("deliver_webhooks", stdout=out)

    assert out.getvalue() == "Delivered 1; 0 failed attempts will be retried.\n"
    assert len(receiver.received) == 1


@pytest.mark.django_db(transaction=True)
def test_the_server_delivers_in_the_background(gateway_factory, owner: User, receiver: Receiver) -> None:
    gateway_factory(DOS_AI_WEBHOOKS_ALLOW_PRIVATE="1", DOS_AI_WEBHOOKS_POLL_SECONDS="0.2", DOS_AI_WEBHOOKS_WORKER="1")
    from django.test import override_settings

    with override_settings(DOS_AI_WEBHOOKS_ALLOW_PRIVATE=True):
        endpoint = endpoint_for(owner, receiver)
    delivery = webhook_test_send(endpoint=endpoint)

    wait_for(lambda: receiver.received or None, timeout=10, what="the delivery")
    wait_for(lambda: Delivery.objects.filter(pk=delivery.pk, status="delivered").first(), timeout=10, what="the log")
    assert verified(endpoint, receiver.received[0])["type"] == "webhook.test"
