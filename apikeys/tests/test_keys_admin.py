from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import User
from apikeys.models import ApiKey
from apikeys.services import api_key_authenticate, api_key_revoke

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/apikeys/apikey/"


@pytest.fixture
def keys(owner: User, outsider: User, make_key) -> dict[str, tuple[ApiKey, str]]:
    made = {
        "production": make_key(owner, "Production backend"),
        "staging": make_key(owner, "Staging"),
        "notebook": make_key(outsider, "Research notebook"),
    }
    api_key_revoke(api_key=made["staging"][0])
    return made


def listed(response) -> list[str]:
    return sorted(api_key.name for api_key in response.context["cl"].result_list)


def test_it_lists_status_name_owner_hint_last_used_created_and_revoked(admin_client: Client, keys) -> None:
    response = admin_client.get(CHANGELIST)

    assert response.status_code == 200
    assert list(response.context["cl"].list_display) == [
        "action_checkbox",
        "status",
        "name",
        "owner",
        "hint",
        "last_used_at",
        "created_at",
        "revoked_at",
    ]
    assert listed(response) == ["Production backend", "Research notebook", "Staging"]
    content = response.content.decode()
    assert keys["production"][0].hint in content
    assert "owner@example.com" in content
    assert f'<a href="/admin/apikeys/apikey/{keys["production"][0].pk}/change/">Production backend</a>' in content


def test_it_never_shows_the_hash_or_the_raw_key(admin_client: Client, keys) -> None:
    api_key, raw_key = keys["production"]

    pages = [admin_client.get(CHANGELIST), admin_client.get(f"{CHANGELIST}{api_key.pk}/change/")]

    for page in pages:
        assert page.status_code == 200
        content = page.content.decode()
        assert api_key.hashed_key not in content
        assert raw_key not in content
        assert "hashed_key" not in content


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("outsider@example.com", ["Research notebook"]),
        ("staging", ["Staging"]),
        ("owner@", ["Production backend", "Staging"]),
    ],
)
def test_it_searches_by_owner_email_and_name(admin_client: Client, keys, query: str, expected: list[str]) -> None:
    response = admin_client.get(CHANGELIST, {"q": query})

    assert listed(response) == expected


def test_it_searches_by_hint(admin_client: Client, keys) -> None:
    api_key, _ = keys["notebook"]

    response = admin_client.get(CHANGELIST, {"q": api_key.hint})

    assert listed(response) == ["Research notebook"]


def test_it_filters_active_and_revoked_keys(admin_client: Client, keys) -> None:
    active = admin_client.get(CHANGELIST, {"status": "active"})
    revoked = admin_client.get(CHANGELIST, {"status": "revoked"})

    assert listed(active) == ["Production backend", "Research notebook"]
    assert listed(revoked) == ["Staging"]


def test_the_revoke_action_revokes_only_the_selected_keys(admin_client: Client, keys) -> None:
    production, production_raw = keys["production"]
    notebook, notebook_raw = keys["notebook"]
    staging, _ = keys["staging"]
    staging_revoked_at = staging.revoked_at

    response = admin_client.post(
        CHANGELIST,
        {"action": "revoke_selected", "_selected_action": [production.pk, staging.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert "Revoked 1 key." in response.content.decode()
    assert api_key_authenticate(production_raw) is None
    assert api_key_authenticate(notebook_raw) == notebook
    # An already revoked key keeps the time it was first revoked.
    assert ApiKey.objects.get(pk=staging.pk).revoked_at == staging_revoked_at


def test_the_revoke_action_is_offered_by_its_documented_name(admin_client: Client, keys) -> None:
    content = admin_client.get(CHANGELIST).content.decode()

    assert '<option value="revoke_selected">Revoke selected keys</option>' in content
    assert 'value="delete_selected"' not in content


def test_keys_cannot_be_added_or_deleted_in_the_admin(admin_client: Client, keys) -> None:
    api_key, _ = keys["production"]

    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403
    assert admin_client.post(f"{CHANGELIST}add/", {"name": "Sneaky"}).status_code == 403
    assert admin_client.post(f"{CHANGELIST}{api_key.pk}/delete/", {"post": "yes"}).status_code == 403
    assert ApiKey.objects.count() == 3
    assert 'href="/admin/apikeys/apikey/add/"' not in admin_client.get(CHANGELIST).content.decode()


def test_an_admin_can_rename_a_key_but_not_change_its_owner_or_dates(
    admin_client: Client, keys, outsider: User
) -> None:
    api_key, raw_key = keys["production"]

    response = admin_client.post(
        f"{CHANGELIST}{api_key.pk}/change/", {"name": "Renamed", "owner": outsider.pk, "revoked_at": "2020-01-01"}
    )

    assert response.status_code == 302
    api_key.refresh_from_db()
    assert api_key.name == "Renamed"
    assert api_key.owner.email == "owner@example.com"
    assert api_key.revoked_at is None
    assert api_key_authenticate(raw_key) == api_key


def test_staff_without_permissions_cannot_see_keys(client_for, keys) -> None:
    staff = User.objects.create_user("staff@example.com", "x", is_staff=True)

    response = client_for(staff).get(CHANGELIST)

    assert response.status_code == 403
