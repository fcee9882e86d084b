from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import User
from billing.models import CreditAccount, LedgerEntry

pytestmark = pytest.mark.django_db

STRONG_PASSWORD = "violet-harbour-lantern-93"


def test_it_shows_the_signup_form(client: Client) -> None:
    response = client.get("/signup/")

    assert response.status_code == 200
    assert b'name="email"' in response.content
    assert b'name="password"' in response.content


def test_it_signs_the_new_user_in_and_lands_on_the_overview(client: Client) -> None:
    response = client.post("/signup/", {"email": "New.Person@Example.com", "password": STRONG_PASSWORD}, follow=True)

    assert response.redirect_chain == [("/", 302)]
    assert response.status_code == 200
    assert response.templates[0].name == "overview.html"
    user = User.objects.get()
    assert user.email == "new.person@example.com"
    assert user.plan == "free"
    assert response.wsgi_request.user == user
    assert int(client.session["_auth_user_id"]) == user.pk
    assert b"Welcome to DOS AI" in response.content


def test_the_new_account_gets_its_signup_credit_in_the_ledger(client: Client) -> None:
    client.post("/signup/", {"email": "new@example.com", "password": STRONG_PASSWORD})

    user = User.objects.get(email="new@example.com")
    entries = list(LedgerEntry.objects.filter(user=user).values_list("kind", "amount_micros", "balance_after_micros"))
    assert entries == [("grant", 5_000_000, 5_000_000)]
    assert CreditAccount.objects.get(user=user).balance_micros == 5_000_000


def test_the_new_user_can_sign_in_with_the_chosen_password(client: Client) -> None:
    client.post("/signup/", {"email": "new@example.com", "password": STRONG_PASSWORD})

    assert Client().login(username="new@example.com", password=STRONG_PASSWORD)


def test_it_refuses_an_email_that_already_has_an_account(client: Client, owner: User) -> None:
    response = client.post("/signup/", {"email": "OWNER@example.com", "password": STRONG_PASSWORD})

    assert response.status_code == 200
    assert response.context["form"].errors == {"email": ["An account with this email already exists. Sign in instead."]}
    assert User.objects.count() == 1
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short1!", "This password is too short. It must contain at least 8 characters."),
        ("password123", "This password is too common."),
        ("83920174651", "This password is entirely numeric."),
        ("weakling@example.com", "The password is too similar to the email address."),
    ],
)
def test_it_refuses_a_weak_password(client: Client, password: str, message: str) -> None:
    response = client.post("/signup/", {"email": "weakling@example.com", "password": password})

    assert response.status_code == 200
    assert message in response.context["form"].errors["password"]
    assert not User.objects.exists()
    assert "_auth_user_id" not in client.session


def test_it_refuses_an_invalid_email(client: Client) -> None:
    response = client.post("/signup/", {"email": "not-an-email", "password": STRONG_PASSWORD})

    assert response.status_code == 200
    assert response.context["form"].errors == {"email": ["Enter a valid email address."]}
    assert not User.objects.exists()


def test_it_shows_required_errors_for_an_empty_post(client: Client) -> None:
    response = client.post("/signup/", {})

    assert response.status_code == 200
    assert response.context["form"].errors == {
        "email": ["This field is required."],
        "password": ["This field is required."],
    }


def test_it_follows_a_safe_next_url_after_signup(client: Client) -> None:
    response = client.post(
        "/signup/?next=/keys/", {"email": "new@example.com", "password": STRONG_PASSWORD, "next": "/keys/"}
    )

    assert response.status_code == 302
    assert response["Location"] == "/keys/"


def test_it_ignores_a_next_url_on_another_site(client: Client) -> None:
    response = client.post(
        "/signup/", {"email": "new@example.com", "password": STRONG_PASSWORD, "next": "https://evil.example.net/"}
    )

    assert response.status_code == 302
    assert response["Location"] == "/"


def test_it_sends_a_signed_in_user_to_the_overview(client_for, owner: User) -> None:
    response = client_for(owner).get("/signup/")

    assert response.status_code == 302
    assert response["Location"] == "/"
