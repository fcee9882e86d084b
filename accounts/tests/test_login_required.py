"""Every dashboard page is for signed-in users only."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import User

pytestmark = pytest.mark.django_db

DASHBOARD_URLS = ["/", "/keys/", "/usage/", "/billing/", "/settings/"]


@pytest.mark.parametrize("url", DASHBOARD_URLS)
def test_it_redirects_anonymous_users_to_the_login_page(client: Client, url: str) -> None:
    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={url}"


@pytest.mark.parametrize("url", DASHBOARD_URLS)
def test_it_serves_signed_in_users(client_for, owner: User, url: str) -> None:
    response = client_for(owner).get(url)

    assert response.status_code == 200


def test_after_signing_in_the_user_lands_where_they_wanted_to_go(client: Client, owner: User, password: str) -> None:
    response = client.get("/usage/", follow=True)
    assert response.redirect_chain == [("/login/?next=/usage/", 302)]

    response = client.post("/login/?next=/usage/", {"login": owner.email, "password": password, "next": "/usage/"})

    assert response.status_code == 302
    assert response["Location"] == "/usage/"
