"""/settings/webhooks/: endpoints, their secret shown once, the log's actions; CSRF; 404 for others'."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.test import Client

from accounts.models import User
from webhooks.events import EVENT_TYPES
from webhooks.models import Delivery, Endpoint
from webhooks.services import endpoint_create, webhook_test_send
from webhooks.tests.conftest import Receiver

pytestmark = pytest.mark.django_db

SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]{40,}")


@pytest.fixture
def owner_client(client_for: Callable[..., Client], owner: User) -> Client:
    return client_for(owner)


@pytest.fixture
def endpoint(owner: User, receiver: Receiver, allow_private: None) -> Endpoint:
    return endpoint_create(owner=owner, url=receiver.url, description="CI", event_types=["api_key.created"])


def test_anonymous_visitors_are_sent_to_sign_in(client: Client) -> None:
    response = client.get("/settings/webhooks/")

    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_adding_an_endpoint_shows_its_secret_once(owner_client: Client, owner: User, receiver, allow_private) -> None:
    response = owner_client.post(
        "/settings/webhooks/",
        {"url": receiver.url, "description": "Ops", "event_types": ["api_key.created", "balance.low"]},
    )

    assert response.status_code == 200
    endpoint = Endpoint.objects.get(owner=owner)
    assert (endpoint.url, endpoint.description, endpoint.event_types) == (
        receiver.url,
        "Ops",
        ["api_key.created", "balance.low"],
    )
    assert SECRET.findall(response.content.decode()) == [endpoint.secret]
    assert "no-store" in response["Cache-Control"]
    later = owner_client.get("/settings/webhooks/").content.decode()
    assert receiver.url in later
    assert not SECRET.search(later)
    assert not SECRET.search(owner_client.get(f"/settings/webhooks/{endpoint.pk}/").content.decode())


def test_a_private_address_is_refused_on_the_form(owner_client: Client, owner: User) -> None:
    response = owner_client.post(
        "/settings/webhooks/", {"url": "http://169.254.169.254/latest", "event_types": ["api_key.created"]}
    )

    assert response.status_code == 200
    assert "webhooks go only to public addresses" in response.content.decode()
    assert not Endpoint.objects.exists()


def test_no_event_chosen_is_a_form_error(owner_client: Client, receiver, allow_private) -> None:
    response = owner_client.post("/settings/webhooks/", {"url": receiver.url})

    assert "Choose at least one event." in response.content.decode()
    assert not Endpoint.objects.exists()


def test_rolling_the_secret_shows_the_new_one_once(owner_client: Client, endpoint: Endpoint) -> None:
    old = endpoint.secret

    response = owner_client.post(f"/settings/webhooks/{endpoint.pk}/roll-secret/")

    endpoint.refresh_from_db()
    assert endpoint.secret != old
    assert SECRET.findall(response.content.decode()) == [endpoint.secret]
    assert "no-store" in response["Cache-Control"]


def test_a_test_event_and_send_again_go_through_the_log(
    owner_client: Client, endpoint: Endpoint, receiver: Receiver
) -> None:
    from webhooks.delivery import deliver_due

    response = owner_client.post(f"/settings/webhooks/{endpoint.pk}/test/")
    assert response.status_code == 302
    deliver_due()
    delivery = Delivery.objects.get()
    assert (delivery.event_type, delivery.status) == ("webhook.test", "delivered")
    page = owner_client.get(f"/settings/webhooks/{endpoint.pk}/").content.decode()
    assert "webhook.test" in page and "Delivered" in page and "HTTP 200" in page

    owner_client.post(f"/settings/webhooks/{endpoint.pk}/deliveries/{delivery.pk}/send-again/")
    deliver_due()

    assert [r.headers["webhook-id"] for r in receiver.received] == [delivery.webhook_id] * 2
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 2)


def test_editing_and_deleting_an_endpoint(owner_client: Client, endpoint: Endpoint, receiver) -> None:
    response = owner_client.post(
        f"/settings/webhooks/{endpoint.pk}/", {"url": receiver.url, "description": "", "event_types": list(EVENT_TYPES)}
    )
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.event_types == list(EVENT_TYPES)

    assert owner_client.post(f"/settings/webhooks/{endpoint.pk}/delete/").status_code == 302
    assert not Endpoint.objects.exists()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/settings/webhooks/{id}/"),
        ("post", "/settings/webhooks/{id}/"),
        ("post", "/settings/webhooks/{id}/roll-secret/"),
        ("post", "/settings/webhooks/{id}/test/"),
        ("post", "/settings/webhooks/{id}/enable/"),
        ("post", "/settings/webhooks/{id}/delete/"),
        ("post", "/settings/webhooks/{id}/deliveries/{delivery}/send-again/"),
    ],
)
def test_another_accounts_endpoint_is_404(
    client_for: Callable[..., Client], outsider: User, endpoint: Endpoint, method: str, path: str
) -> None:
    delivery = webhook_test_send(endpoint=endpoint)
    secret = endpoint.secret

    response = getattr(client_for(outsider), method)(path.format(id=endpoint.pk, delivery=delivery.pk))

    assert response.status_code == 404
    endpoint.refresh_from_db()
    assert endpoint.secret == secret
    assert Delivery.objects.count() == 1


def test_a_delivery_of_another_endpoint_is_404(
    owner_client: Client, owner: User, endpoint: Endpoint, receiver, outsider
) -> None:
    others = endpoint_create(owner=outsider, url=receiver.url, description="", event_types=["api_key.created"])
    delivery = webhook_test_send(endpoint=others)

    response = owner_client.post(f"/settings/webhooks/{endpoint.pk}/deliveries/{delivery.pk}/send-again/")

    assert response.status_code == 404


@pytest.mark.parametrize("path", ["/settings/webhooks/", "/settings/webhooks/{id}/roll-secret/"])
def test_posts_without_the_csrf_token_are_refused(owner: User, endpoint: Endpoint, path: str, receiver) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    secret = endpoint.secret

    response = client.post(path.format(id=endpoint.pk), {"url": receiver.url, "event_types": ["api_key.created"]})

    assert response.status_code == 403
    endpoint.refresh_from_db()
    assert endpoint.secret == secret
    assert Endpoint.objects.count() == 1
