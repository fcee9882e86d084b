from __future__ import annotations

import pytest

from accounts.models import User
from apikeys.services import api_key_create, api_key_revoke
from billing.services import credits_grant

pytestmark = pytest.mark.django_db


def test_it_shows_the_plan_and_its_limits(client_for, owner: User) -> None:
    response = client_for(owner).get("/")

    assert response.status_code == 200
    content = response.content.decode()
    assert response.context["plan"].label == "Free"
    assert ">60<" in content
    assert ">100,000<" in content


def test_it_shows_an_accounts_own_limits_over_the_plans(client_for, owner: User) -> None:
    owner.plan = "pro"
    owner.requests_per_minute_override = 1000
    owner.save()

    content = client_for(owner).get("/").content.decode()

    assert ">Pro<" in content
    assert ">1,000<" in content
    assert ">2,000,000<" in content


def test_the_quickstart_uses_this_sites_base_url_in_three_forms(client_for, owner: User) -> None:
    content = client_for(owner).get("/", HTTP_HOST="localhost").content.decode()

    assert 'base_url="http://localhost/v1"' in content  # Python SDK
    assert 'baseURL: "http://localhost/v1"' in content  # JavaScript SDK
    assert "curl http://localhost/v1/chat/completions" in content
    assert 'api_key=os.environ["DOS_AI_API_KEY"]' in content
    assert "apiKey: process.env.DOS_AI_API_KEY" in content
    assert "Authorization: Bearer $DOS_AI_API_KEY" in content


def test_the_quickstart_shows_the_public_api_url_when_one_is_set(client_for, owner: User, settings) -> None:
    settings.DOS_AI_PUBLIC_API_URL = "https://api.example.com/v1"

    content = client_for(owner).get("/").content.decode()

    assert 'base_url="https://api.example.com/v1"' in content
    assert "curl https://api.example.com/v1/chat/completions" in content


def test_the_layout_names_the_signed_in_user_and_every_section(client_for, owner: User) -> None:
    content = client_for(owner).get("/").content.decode()

    assert "owner@example.com" in content
    for href, label in [
        ("/", "Overview"),
        ("/keys/", "API keys"),
        ("/usage/", "Usage"),
        ("/billing/", "Billing"),
        ("/settings/", "Settings"),
    ]:
        assert f'href="{href}"' in content
        assert f">{label}</a>" in content
    assert 'href="/admin/"' not in content


def test_staff_see_the_admin_link(client_for, owner: User) -> None:
    owner.is_staff = True
    owner.save()

    content = client_for(owner).get("/").content.decode()

    assert 'href="/admin/"' in content


def test_the_layout_serves_its_own_assets_and_no_cdn(client_for, owner: User) -> None:
    content = client_for(owner).get("/").content.decode()

    assert 'href="/static/css/app.css"' in content
    assert 'src="/static/js/app.js"' in content
    assert 'src="/static/django_htmx/htmx-2.min.js"' in content
    assert "https://" not in content
    assert "//cdn" not in content


def test_the_body_carries_the_csrf_token_for_htmx(client_for, owner: User) -> None:
    content = client_for(owner).get("/").content.decode()

    assert 'hx-headers=\'{"x-csrftoken": "' in content


def test_it_shows_the_credit_balance_from_the_ledger(client_for, owner: User) -> None:
    credits_grant(user=owner, amount_micros=2_500_000, note="Top-up")

    response = client_for(owner).get("/")

    assert response.context["balance"] == "$7.50"
    assert ">$7.50<" in response.content.decode()


def test_it_invites_a_user_without_keys_to_create_one(client_for, owner: User) -> None:
    content = client_for(owner).get("/").content.decode()

    assert ">Create an API key</a>" in content


def test_it_counts_only_active_keys(client_for, owner: User, outsider: User) -> None:
    api_key_create(owner=owner, name="laptop")
    revoked, _ = api_key_create(owner=owner, name="old")
    api_key_revoke(api_key=revoked)
    api_key_create(owner=outsider, name="not mine")

    response = client_for(owner).get("/")

    assert response.context["active_key_count"] == 1
    assert "You have 1 active key." in response.content.decode()
