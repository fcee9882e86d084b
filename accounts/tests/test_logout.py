from __future__ import annotations

import pytest

from accounts.models import User

pytestmark = pytest.mark.django_db


def test_it_refuses_to_sign_out_on_get(client_for, owner: User) -> None:
    client = client_for(owner)

    response = client.get("/logout/")

    assert response.status_code == 405
    assert response["Allow"] == "POST, OPTIONS"
    assert int(client.session["_auth_user_id"]) == owner.pk


def test_it_signs_out_on_post(client_for, owner: User) -> None:
    client = client_for(owner)

    response = client.post("/logout/")

    assert response.status_code == 302
    assert response["Location"] == "/login/"
    assert "_auth_user_id" not in client.session
    assert client.get("/").status_code == 302


def test_the_layout_signs_out_with_a_post_form(client_for, owner: User) -> None:
    response = client_for(owner).get("/")

    assert b'<form method="post" action="/logout/"' in response.content


def test_the_sign_in_page_says_you_are_signed_out(client_for, owner: User) -> None:
    client = client_for(owner)

    page = client.post("/logout/", follow=True)

    assert page.redirect_chain == [("/login/", 302)]
    assert "You are signed out." in page.content.decode()
    assert "You are signed out." not in client.get("/login/").content.decode()  # said once
