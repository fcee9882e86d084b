from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import User

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "marble-orchard-compass-71"


def test_it_shows_the_account_and_its_plan(client_for, owner: User) -> None:
    response = client_for(owner).get("/settings/")

    assert response.status_code == 200
    content = response.content.decode()
    assert "owner@example.com" in content
    assert "Free" in content


def test_it_changes_the_password_and_keeps_the_user_signed_in(client_for, owner: User, password: str) -> None:
    client = client_for(owner)

    response = client.post(
        "/settings/", {"old_password": password, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )

    assert response.status_code == 302
    assert response["Location"] == "/settings/"
    assert client.get("/settings/").status_code == 200
    assert Client().login(username="owner@example.com", password=NEW_PASSWORD)
    assert not Client().login(username="owner@example.com", password=password)


def test_it_refuses_a_wrong_old_password(client_for, owner: User, password: str) -> None:
    response = client_for(owner).post(
        "/settings/", {"old_password": "not it", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )

    assert response.status_code == 200
    assert response.context["form"].errors == {
        "old_password": ["Your old password was entered incorrectly. Please enter it again."]
    }
    owner.refresh_from_db()
    assert owner.check_password(password)


def test_it_refuses_a_weak_new_password(client_for, owner: User, password: str) -> None:
    response = client_for(owner).post(
        "/settings/", {"old_password": password, "new_password1": "12345678", "new_password2": "12345678"}
    )

    assert response.status_code == 200
    assert "This password is entirely numeric." in response.context["form"].errors["new_password2"]
