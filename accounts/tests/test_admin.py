from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import User

pytestmark = pytest.mark.django_db


@pytest.fixture
def members(owner: User, outsider: User) -> list[User]:
    pro = User.objects.create_user("pro.customer@example.com", "x", plan="pro")
    plus = User.objects.create_user("plus.customer@example.com", "x", plan="plus")
    return [owner, outsider, pro, plus]


def listed_emails(response) -> list[str]:
    return [user.email for user in response.context["cl"].result_list]


def test_it_lists_users_with_email_plan_date_joined_and_last_login(admin_client: Client, members) -> None:
    response = admin_client.get("/admin/accounts/user/")

    assert response.status_code == 200
    assert list(response.context["cl"].list_display)[:5] == [
        "action_checkbox",
        "email",
        "plan",
        "date_joined",
        "last_login",
    ]
    content = response.content.decode()
    for header in ("Email address", "Plan", "Date joined", "Last login"):
        assert f">{header}</a>" in content
    assert listed_emails(response) == [
        "admin@example.com",
        "outsider@example.com",
        "owner@example.com",
        "plus.customer@example.com",
        "pro.customer@example.com",
    ]


def test_it_searches_users_by_email(admin_client: Client, members) -> None:
    response = admin_client.get("/admin/accounts/user/", {"q": "customer@"})

    assert response.status_code == 200
    assert listed_emails(response) == ["plus.customer@example.com", "pro.customer@example.com"]


def test_it_filters_users_by_plan(admin_client: Client, members) -> None:
    response = admin_client.get("/admin/accounts/user/", {"plan__exact": "pro"})

    assert response.status_code == 200
    assert listed_emails(response) == ["pro.customer@example.com"]
    assert response.context["cl"].filter_specs[0].field_path == "plan"


def test_it_creates_a_user_with_email_and_password(admin_client: Client) -> None:
    response = admin_client.post(
        "/admin/accounts/user/add/",
        {
            "email": "Added@Example.com",
            "password1": "violet-harbour-lantern-93",
            "password2": "violet-harbour-lantern-93",
        },
    )

    assert response.status_code == 302
    user = User.objects.get(email__iexact="added@example.com")
    assert user.check_password("violet-harbour-lantern-93")
    assert user.plan == "free"


def test_it_changes_a_users_plan_and_limits(admin_client: Client, owner: User) -> None:
    response = admin_client.post(
        f"/admin/accounts/user/{owner.pk}/change/",
        {"email": owner.email, "plan": "plus", "tokens_per_minute_override": "750000", "is_active": "on"},
    )

    assert response.status_code == 302
    owner.refresh_from_db()
    assert owner.plan == "plus"
    assert (owner.requests_per_minute, owner.tokens_per_minute) == (120, 750_000)


def test_a_regular_user_cannot_open_the_user_admin(client_for, owner: User) -> None:
    response = client_for(owner).get("/admin/accounts/user/")

    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/admin/accounts/user/"
