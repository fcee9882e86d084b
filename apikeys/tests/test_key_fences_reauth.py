"""Editing a key: loosening a fence needs a fresh sign-in (as creating a key does); tightening
or renaming does not."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from django.test import Client

from apikeys.models import ApiKey
from apikeys.services import api_key_update
from billing.models import ServedModel
from billing.seed import SEED, ensure

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
# The key's fences, as the edit form shows them: posting this unchanged changes nothing.
AS_NOW = {
    "name": "Prod",
    "expiry": "keep",
    "spend_limit": "10",
    "spend_period": "week",
    "model_scope": "some",
    "allowed_models": ["dos-ai", "dos-ai-embed"],
    "max_concurrency": "5",
    "allowed_ips": "203.0.113.0/24, 2001:db8:1::/48",
}


@pytest.fixture
def fenced(owner, make_key) -> ApiKey:
    for row in SEED:
        ensure(ServedModel, row)
    api_key, _ = make_key(owner, "Prod")
    return api_key_update(
        api_key=api_key,
        expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=20),
        spend_limit_micros=10_000_000,
        spend_period="week",
        allowed_models=["dos-ai", "dos-ai-embed"],
        max_concurrency=5,
        allowed_ips=["203.0.113.0/24", "2001:db8:1::/48"],
    )


@pytest.fixture
def stale_client(client_for, owner) -> Client:
    """Signed in an hour ago: past ACCOUNT_REAUTHENTICATION_TIMEOUT (5 minutes)."""
    client = client_for(owner)
    session = client.session
    session["account_authentication_methods"][0]["at"] = time.time() - 3600
    session.save()
    return client


def fences(api_key: ApiKey) -> tuple[Any, ...]:
    api_key.refresh_from_db()
    return (
        api_key.name,
        api_key.expires_at,
        api_key.spend_limit_micros,
        api_key.spend_period,
        api_key.allowed_models,
        api_key.max_concurrency,
        api_key.allowed_ips,
    )


LOOSENING = {
    "all fences emptied": {"name": "Prod"},
    "no expiry": {"expiry": "never"},
    "a later expiry": {"expiry": "90"},
    "a later expiry date": {"expiry": "date", "expires_on": (dt.date.today() + dt.timedelta(days=60)).isoformat()},
    "any address": {"allowed_ips": ""},
    "a wider range": {"allowed_ips": "203.0.0.0/16, 2001:db8:1::/48"},
    "another address": {"allowed_ips": "203.0.113.0/24, 2001:db8:1::/48, 198.51.100.7"},
    "a wider IPv6 range": {"allowed_ips": "203.0.113.0/24, 2001:db8::/32"},
    "all models": {"model_scope": "all"},
    "no cap": {"max_concurrency": ""},
    "a higher cap": {"max_concurrency": "6"},
    "no spend limit": {"spend_limit": ""},
    "a higher spend limit": {"spend_limit": "10.01"},
    "a longer period": {"spend_period": "month"},
    "a shorter period": {"spend_period": "day"},
}
TIGHTENING = {
    "a new name": {"name": "Production"},
    "an earlier expiry": {"expiry": "7"},
    "a narrower range": {"allowed_ips": "203.0.113.128/25, 2001:db8:1:2::/64"},
    "an address inside the range": {"allowed_ips": "203.0.113.9"},
    "fewer models": {"allowed_models": ["dos-ai"]},
    "a lower cap": {"max_concurrency": "2"},
    "a lower spend limit": {"spend_limit": "2.5"},
}


@pytest.mark.parametrize("change", LOOSENING.values(), ids=LOOSENING.keys())
@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_loosening_a_fence_with_an_hour_old_session_asks_to_confirm_and_changes_nothing(
    stale_client: Client, fenced: ApiKey, change: dict[str, Any], htmx: bool
) -> None:
    before = fences(fenced)
    data = change if change == {"name": "Prod"} else {**AS_NOW, **change}

    response = stale_client.post(f"/keys/{fenced.pk}/edit/", data, **(HTMX if htmx else {}))

    confirm = f"/accounts/reauthenticate/?next=%2Fkeys%2F{fenced.pk}%2Fedit%2F"
    if htmx:
        assert response.status_code == 200
        assert response["HX-Redirect"] == confirm
    else:
        assert response.status_code == 302
        assert response["Location"] == confirm
    assert fences(fenced) == before


@pytest.mark.parametrize("change", TIGHTENING.values(), ids=TIGHTENING.keys())
def test_tightening_or_renaming_with_an_hour_old_session_is_saved(
    stale_client: Client, fenced: ApiKey, change: dict[str, Any]
) -> None:
    before = fences(fenced)

    response = stale_client.post(f"/keys/{fenced.pk}/edit/", {**AS_NOW, **change}, **HTMX)

    assert response["HX-Redirect"] == "/keys/"
    after = fences(fenced)
    assert after != before
    if "expiry" in change:
        assert after[1] < before[1]


def test_an_unchanged_form_is_saved_without_asking(stale_client: Client, fenced: ApiKey) -> None:
    before = fences(fenced)

    response = stale_client.post(f"/keys/{fenced.pk}/edit/", AS_NOW)

    assert (response.status_code, response["Location"]) == (302, "/keys/")
    assert fences(fenced) == before


def test_a_fresh_session_may_remove_every_fence(client_for, owner, fenced: ApiKey) -> None:
    response = client_for(owner).post(f"/keys/{fenced.pk}/edit/", {"name": "Prod"})

    assert (response.status_code, response["Location"]) == (302, "/keys/")
    assert fences(fenced) == ("Prod", None, None, "", None, None, None)


def test_after_confirming_the_password_the_fence_can_be_removed(
    stale_client: Client, fenced: ApiKey, password: str
) -> None:
    refused = stale_client.post(f"/keys/{fenced.pk}/edit/", {**AS_NOW, "allowed_ips": ""})
    confirmed = stale_client.post(refused["Location"], {"password": password, "next": f"/keys/{fenced.pk}/edit/"})
    saved = stale_client.post(f"/keys/{fenced.pk}/edit/", {**AS_NOW, "allowed_ips": ""})

    assert (confirmed.status_code, confirmed["Location"]) == (302, f"/keys/{fenced.pk}/edit/")
    assert (saved.status_code, saved["Location"]) == (302, "/keys/")
    assert fences(fenced)[6] is None
