"""A key's settings in the admin (saved through the same service as the dashboard) and its Revoke button."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client

from apikeys.models import ApiKey
from billing.models import ServedModel
from billing.seed import SEED, ensure

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def seeded_models(db: None) -> None:
    for row in SEED:
        ensure(ServedModel, row)


def form_data(api_key: ApiKey, **changes: str) -> dict[str, str]:
    return {
        "name": api_key.name,
        "expires_at_0": "",
        "expires_at_1": "",
        "spend_limit_usd": "",
        "spend_period": "",
        "models_text": "",
        "max_concurrency": "",
        "ips_text": "",
        **changes,
    }


def test_the_settings_are_saved_through_the_service(admin_client: Client, owner, make_key) -> None:
    api_key, _ = make_key(owner, "ci")
    url = f"/admin/apikeys/apikey/{api_key.pk}/change/"
    assert "Settings" in admin_client.get(url).content.decode()

    response = admin_client.post(
        url,
        form_data(
            api_key,
            name="CI runner",
            expires_at_0="2099-01-02",
            expires_at_1="03:04:05",
            spend_limit_usd="1.5",
            spend_period="day",
            models_text="dos-ai",
            max_concurrency="2",
            ips_text="10.0.0.1/8\n::1",
        ),
    )

    assert response.status_code == 302
    api_key.refresh_from_db()
    assert api_key.name == "CI runner"
    assert api_key.expires_at == dt.datetime(2099, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert (api_key.spend_limit_micros, api_key.spend_period) == (1_500_000, "day")
    assert (api_key.allowed_models, api_key.max_concurrency, api_key.allowed_ips) == (
        ["dos-ai"],
        2,
        ["10.0.0.0/8", "::1"],
    )
    assert api_key.spend_period_start is not None


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"ips_text": "10.0.0.300"}, "ips_text", "Not an IP address or CIDR range: '10.0.0.300'."),
        ({"models_text": "gpt-9"}, "models_text", "No such model: gpt-9."),
        ({"spend_limit_usd": "5"}, "spend_period", "Choose the period of the spend limit."),
        ({"max_concurrency": "0"}, "max_concurrency", None),
        ({"name": "   "}, "name", "Give the key a name, e.g. “Production backend”."),
        ({"name": "x" * 101}, "name", "Keep the name to 100 characters or fewer."),
    ],
)
def test_bad_settings_are_form_errors(admin_client: Client, owner, make_key, changes, field, message) -> None:
    api_key, _ = make_key(owner, "ci")
    response = admin_client.post(f"/admin/apikeys/apikey/{api_key.pk}/change/", form_data(api_key, **changes))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors
    if message:
        assert errors[field] == [message]
    assert ApiKey.objects.get(pk=api_key.pk).allowed_ips is None
    assert ApiKey.objects.get(pk=api_key.pk).name == "ci"


def test_the_revoke_button_revokes_by_post_only(admin_client: Client, owner, make_key) -> None:
    api_key, _ = make_key(owner, "ci")
    change_url = f"/admin/apikeys/apikey/{api_key.pk}/change/"
    page = admin_client.get(change_url).content.decode()
    assert f'action="/admin/apikeys/apikey/{api_key.pk}/revoke/"' in page
    assert ">Revoke</button>" in page

    assert admin_client.get(f"/admin/apikeys/apikey/{api_key.pk}/revoke/").status_code == 405
    response = admin_client.post(f"/admin/apikeys/apikey/{api_key.pk}/revoke/")

    assert response.status_code == 302
    assert response["Location"] == change_url
    assert ApiKey.objects.get(pk=api_key.pk).revoked_at is not None
    assert ">Revoke</button>" not in admin_client.get(change_url).content.decode()


def test_a_non_staff_user_cannot_revoke(client_for, owner, make_key) -> None:
    api_key, _ = make_key(owner, "ci")
    response = client_for(owner).post(f"/admin/apikeys/apikey/{api_key.pk}/revoke/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
    assert ApiKey.objects.get(pk=api_key.pk).revoked_at is None
