from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import User

pytestmark = pytest.mark.django_db


def test_it_shows_the_login_form(client: Client) -> None:
    response = client.get("/login/")

    assert response.status_code == 200
    assert b'name="login"' in response.content
    assert b'type="email"' in response.content
    assert b'name="password"' in response.content


def test_it_signs_in_with_the_right_password(client: Client, owner: User, password: str) -> None:
    response = client.post("/login/", {"login": "owner@example.com", "password": password})

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert int(client.session["_auth_user_id"]) == owner.pk


def test_it_accepts_the_email_in_any_case(client: Client, owner: User, password: str) -> None:
    response = client.post("/login/", {"login": "  Owner@Example.COM ", "password": password})

    assert response.status_code == 302
    assert int(client.session["_auth_user_id"]) == owner.pk


def test_it_refuses_a_wrong_password(client: Client, owner: User) -> None:
    response = client.post("/login/", {"login": "owner@example.com", "password": "not the password"})

    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [
        "The email address and/or password you specified are not correct."
    ]
    assert b"The email address and/or password you specified are not correct." in response.content
    assert "_auth_user_id" not in client.session
    owner.refresh_from_db()
    assert owner.last_login is None


def test_it_refuses_an_unknown_email_with_the_same_message(client: Client, password: str) -> None:
    response = client.post("/login/", {"login": "nobody@example.com", "password": password})

    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [
        "The email address and/or password you specified are not correct."
    ]
    assert "_auth_user_id" not in client.session


def test_it_refuses_a_disabled_account(client: Client, owner: User, password: str) -> None:
    owner.is_active = False
    owner.save()

    response = client.post("/login/", {"login": "owner@example.com", "password": password})

    # allauth's "this account is inactive" page (only with the right password).
    assert response.status_code == 302
    assert response["Location"] == "/accounts/inactive/"
    assert "_auth_user_id" not in client.session


def test_it_follows_the_next_url_after_sign_in(client: Client, owner: User, password: str) -> None:
    response = client.post(
        "/login/?next=/usage/", {"login": "owner@example.com", "password": password, "next": "/usage/"}
    )

    assert response.status_code == 302
    assert response["Location"] == "/usage/"


def test_it_never_redirects_to_another_site(client: Client, owner: User, password: str) -> None:
    response = client.post(
        "/login/", {"login": "owner@example.com", "password": password, "next": "https://evil.example.net/"}
    )

    assert response.status_code == 302
    assert response["Location"] == "/"


def test_it_sends_a_signed_in_user_to_the_overview(client_for, owner: User) -> None:
    response = client_for(owner).get("/login/")

    assert response.status_code == 302
    assert response["Location"] == "/"
