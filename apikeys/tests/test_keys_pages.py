from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import User
from apikeys.keys import KEY_PATTERN
from apikeys.models import ApiKey
from apikeys.services import api_key_authenticate, api_key_revoke
from dosportal.testing.html import fragment_of, text_of

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
RAW_KEY_IN_PAGE = re.compile(r"dos_sk_[A-Za-z0-9]{32}")
CONFIRMATION = "Revoke '<strong>Production backend</strong>'? Requests using it will fail immediately."


@pytest.fixture
def owner_client(client_for: Callable[..., Client], owner: User) -> Client:
    return client_for(owner)


def raw_keys_in(response) -> set[str]:
    return set(RAW_KEY_IN_PAGE.findall(response.content.decode()))


def row_ids(response) -> list[int]:
    return [int(found) for found in re.findall(r'<tr id="key-(\d+)">', response.content.decode())]


def vary(response) -> set[str]:
    return {part.strip().lower() for part in response.get("Vary", "").split(",")}


# --- Who may see the page ----------------------------------------------------------


def test_it_sends_anonymous_visitors_to_the_login_page(client: Client) -> None:
    response = client.get("/keys/")

    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/keys/"


def test_it_does_not_create_a_key_for_an_anonymous_post(client: Client) -> None:
    response = client.post("/keys/create/", {"name": "Sneaky"})

    assert response.status_code == 302
    assert response["Location"].startswith("/login/")
    assert ApiKey.objects.count() == 0


def test_an_htmx_request_from_an_expired_session_reloads_into_the_login_page(client: Client) -> None:
    response = client.post("/keys/create/", {"name": "Sneaky"}, HTTP_HX_CURRENT_URL="http://testserver/keys/", **HTMX)

    assert response.status_code == 200
    assert response["HX-Redirect"] == "/login/?next=/keys/"
    assert response.content == b""
    assert ApiKey.objects.count() == 0


# --- The list ----------------------------------------------------------------------


def test_it_shows_the_empty_state_with_the_create_form(owner_client: Client) -> None:
    response = owner_client.get("/keys/")

    assert response.status_code == 200
    content = response.content.decode()
    assert "Create your first API key" in content
    assert "An API key lets your code call the DOS AI API" in content
    assert 'action="/keys/create/"' in content
    assert '<label for="key-name">Key name</label>' in content
    assert "<table" not in content


def test_it_lists_keys_newest_first_with_name_hint_created_date_and_never_used(
    owner_client: Client, owner: User, make_key
) -> None:
    now = timezone.now()
    older, _ = make_key(owner, "Staging", created_at=datetime(2026, 3, 4, 10, 0, tzinfo=UTC))
    newer, _ = make_key(owner, "Production backend", created_at=now)

    response = owner_client.get("/keys/")

    assert response.status_code == 200
    assert row_ids(response) == [newer.pk, older.pk]
    content = response.content.decode()
    assert "2 active keys, newest first." in content
    assert f'<code class="key-hint">{older.hint}</code>' in content
    assert '<td class="key-name stack-title">Staging</td>' in content
    assert 'title="2026-03-04 10:00:00 UTC">4 Mar 2026</time>' in content
    assert content.count('<span class="faint">Never</span>') == 2
    assert f'href="/keys/{older.pk}/delete/"' in content
    assert "Create your first API key" not in content


def test_it_shows_last_used_as_a_relative_time_with_the_exact_utc_time_on_hover(
    owner_client: Client, owner: User, make_key
) -> None:
    used_at = (timezone.now() - timedelta(minutes=5)).replace(microsecond=0)
    make_key(owner, "Production backend", last_used_at=used_at)

    content = owner_client.get("/keys/").content.decode()

    exact = used_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    assert f'title="{exact} UTC">5\xa0minutes ago</time>' in content
    assert "Never" not in content


def test_it_shows_neither_revoked_keys_nor_other_users_keys(
    owner_client: Client, owner: User, outsider: User, make_key
) -> None:
    mine, _ = make_key(owner, "Mine")
    revoked, _ = make_key(owner, "Old one")
    api_key_revoke(api_key=revoked)
    theirs, _ = make_key(outsider, "Outsider secret project")

    response = owner_client.get("/keys/")

    assert row_ids(response) == [mine.pk]
    content = response.content.decode()
    assert "Old one" not in content
    assert "Outsider secret project" not in content
    assert theirs.hint not in content


def test_an_htmx_request_for_the_list_gets_only_the_list_fragment(owner_client: Client, owner: User, make_key) -> None:
    api_key, _ = make_key(owner)

    response = owner_client.get("/keys/", **HTMX)

    content = fragment_of(response, '<section id="keys"')
    assert "<html" not in content
    assert "hx-swap-oob" not in content
    assert row_ids(response) == [api_key.pk]
    assert "hx-request" in vary(response)


def test_an_htmx_history_restore_gets_the_full_page(owner_client: Client) -> None:
    response = owner_client.get("/keys/", HTTP_HX_HISTORY_RESTORE_REQUEST="true", **HTMX)

    assert response.status_code == 200
    assert response.content.decode().startswith("<!doctype html>")


def test_a_plain_request_for_the_list_gets_the_full_page(owner_client: Client) -> None:
    response = owner_client.get("/keys/")

    content = response.content.decode()
    assert content.startswith("<!doctype html>")
    assert "<title>API keys · DOS AI</title>" in content
    assert 'href="/static/css/keys.css"' in content
    assert "hx-request" in vary(response)


# --- Create ------------------------------------------------------------------------


def test_it_creates_a_key_and_shows_it_once_in_the_post_response(owner_client: Client, owner: User) -> None:
    response = owner_client.post("/keys/create/", {"name": "  Production backend  "})

    assert response.status_code == 200
    api_key = ApiKey.objects.get()
    assert api_key.owner == owner
    assert api_key.name == "Production backend"
    (raw_key,) = raw_keys_in(response)
    assert KEY_PATTERN.fullmatch(raw_key)
    assert api_key_authenticate(raw_key) == api_key
    content = response.content.decode()
    assert f'<code id="new-key-value" class="key-secret">{raw_key}</code>' in content
    assert 'data-copy-target="new-key-value"' in content
    assert "it will not be shown again" in content
    assert f'export DOS_AI_API_KEY="{raw_key}"' in text_of(content)
    assert content.startswith("<!doctype html>")
    assert row_ids(response) == [api_key.pk]


def test_the_response_that_shows_the_key_may_not_be_stored(owner_client: Client) -> None:
    for extra in ({}, HTMX):
        response = owner_client.post("/keys/create/", {"name": f"Production backend {len(extra)}"}, **extra)

        assert response.status_code == 200
        assert "no-store" in response["Cache-Control"]
        assert "private" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]


def test_a_reload_of_the_page_does_not_contain_the_key(owner_client: Client) -> None:
    created = owner_client.post("/keys/create/", {"name": "Production backend"})
    (raw_key,) = raw_keys_in(created)

    reloaded = owner_client.get("/keys/")

    assert reloaded.status_code == 200
    assert raw_key not in reloaded.content.decode()
    assert raw_keys_in(reloaded) == set()
    assert ApiKey.objects.get().hint in reloaded.content.decode()
    assert raw_key not in owner_client.get("/keys/", **HTMX).content.decode()
    assert raw_key not in owner_client.get("/").content.decode()


def test_an_htmx_create_gets_the_key_panel_and_the_list_in_one_response(
    owner_client: Client, owner: User, make_key
) -> None:
    older, _ = make_key(owner, "Staging")

    response = owner_client.post("/keys/create/", {"name": "Production backend"}, **HTMX)

    content = fragment_of(response, '<section class="card key-reveal"')
    api_key = ApiKey.objects.get(name="Production backend")
    assert "<html" not in content
    (raw_key,) = raw_keys_in(response)
    assert api_key_authenticate(raw_key) == api_key
    # The list comes out of band in the same response: no event, no second request.
    assert (
        '<section id="keys" class="card card-flush keys-card" aria-labelledby="keys-title" hx-swap-oob="outerHTML">'
        in content
    )
    assert row_ids(response) == [api_key.pk, older.pk]
    assert "HX-Trigger" not in response
    assert "hx-request" in vary(response)


def test_the_list_after_an_htmx_create_shows_the_new_key_without_the_raw_key(owner_client: Client) -> None:
    created = owner_client.post("/keys/create/", {"name": "Production backend"}, **HTMX)
    (raw_key,) = raw_keys_in(created)

    refreshed = owner_client.get("/keys/", **HTMX)

    api_key = ApiKey.objects.get()
    assert row_ids(refreshed) == [api_key.pk]
    assert raw_key not in refreshed.content.decode()
    # The raw key appears once in the create response: in the panel, not in the list.
    table = created.content.decode().split('<section id="keys"', 1)[1]
    assert raw_key not in table


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("", "Give the key a name, e.g. “Production backend”."),
        ("    ", "Give the key a name, e.g. “Production backend”."),
        ("x" * 101, "Keep the name to 100 characters or fewer."),
    ],
)
def test_an_invalid_name_gets_an_inline_error_on_the_full_page(owner_client: Client, name: str, error: str) -> None:
    response = owner_client.post("/keys/create/", {"name": name})

    assert response.status_code == 200
    assert ApiKey.objects.count() == 0
    content = response.content.decode()
    assert f'<div class="field-error" id="key-name_error" role="alert"><p>{error}</p></div>' in content
    assert 'aria-invalid="true"' in content
    assert content.startswith("<!doctype html>")
    assert raw_keys_in(response) == set()


def test_an_invalid_name_gets_the_form_with_its_error_for_htmx(owner_client: Client) -> None:
    response = owner_client.post("/keys/create/", {"name": "x" * 101}, **HTMX)

    assert response.status_code == 200
    assert response["HX-Retarget"] == "#key-create-form"
    assert response["HX-Reswap"] == "outerHTML"
    assert "HX-Trigger" not in response
    content = response.content.decode()
    assert content.strip().startswith('<form id="key-create-form"')
    assert "Keep the name to 100 characters or fewer." in content
    assert "<html" not in content
    assert ApiKey.objects.count() == 0


def test_a_name_of_exactly_100_characters_is_accepted(owner_client: Client) -> None:
    response = owner_client.post("/keys/create/", {"name": "x" * 100})

    assert response.status_code == 200
    assert ApiKey.objects.get().name == "x" * 100


def test_a_missing_name_field_is_an_inline_error_not_a_crash(owner_client: Client) -> None:
    response = owner_client.post("/keys/create/", {})

    assert response.status_code == 200
    assert "Give the key a name" in response.content.decode()


def test_there_is_no_limit_on_the_number_of_active_keys(owner_client: Client, owner: User) -> None:
    for number in range(30):
        assert owner_client.post("/keys/create/", {"name": f"Key {number}"}, **HTMX).status_code == 200

    assert owner.api_keys.active().count() == 30
    assert len(row_ids(owner_client.get("/keys/"))) == 30


def test_create_refuses_get(owner_client: Client) -> None:
    response = owner_client.get("/keys/create/")

    assert response.status_code == 405
    assert ApiKey.objects.count() == 0


# --- Delete ------------------------------------------------------------------------


def test_it_asks_for_confirmation_naming_the_key_on_a_page_of_its_own(owner_client: Client, owner_key: ApiKey) -> None:
    response = owner_client.get(f"/keys/{owner_key.pk}/delete/")

    assert response.status_code == 200
    content = response.content.decode()
    assert content.startswith("<!doctype html>")
    assert CONFIRMATION in content
    assert f'<form method="post" action="/keys/{owner_key.pk}/revoke/"' in content
    assert '<a class="btn" href="/keys/">Cancel</a>' in content
    owner_key.refresh_from_db()
    assert owner_key.revoked_at is None


def test_an_htmx_delete_gets_the_confirmation_as_a_dialog(owner_client: Client, owner_key: ApiKey) -> None:
    response = owner_client.get(f"/keys/{owner_key.pk}/delete/", **HTMX)

    content = fragment_of(response, '<dialog class="delete-dialog"')
    # Opened by static/js/app.js: no hx-on attribute, which the CSP would refuse to evaluate.
    assert "data-modal>" in content
    assert "hx-on" not in content
    assert CONFIRMATION in content
    assert '<form method="dialog">' in content
    assert "hx-request" in vary(response)


def test_it_revokes_the_key_and_confirms_with_a_message(owner_client: Client, owner: User, make_key) -> None:
    api_key, raw_key = make_key(owner)
    other, _ = make_key(owner, "Staging")

    response = owner_client.post(f"/keys/{api_key.pk}/revoke/")

    assert response.status_code == 302
    assert response["Location"] == "/keys/"
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    assert api_key_authenticate(raw_key) is None
    page = owner_client.get("/keys/")
    assert row_ids(page) == [other.pk]
    assert "Revoked “Production backend”. Requests using it now fail." in page.content.decode()


def test_an_htmx_revoke_returns_the_list_without_the_row_and_the_message(
    owner_client: Client, owner: User, make_key
) -> None:
    api_key, _ = make_key(owner)
    other, _ = make_key(owner, "Staging")

    response = owner_client.post(f"/keys/{api_key.pk}/revoke/", **HTMX)

    content = fragment_of(response, '<section id="keys"')
    assert "<html" not in content
    assert row_ids(response) == [other.pk]
    assert '<div id="messages"' in content
    assert "Revoked “Production backend”. Requests using it now fail." in content
    assert "hx-request" in vary(response)
    # The message was shown in the fragment, so the next page does not repeat it.
    assert "Revoked “Production backend”" not in owner_client.get("/keys/").content.decode()


def test_revoking_the_last_key_brings_back_the_empty_state(owner_client: Client, owner_key: ApiKey) -> None:
    response = owner_client.post(f"/keys/{owner_key.pk}/revoke/", **HTMX)

    assert row_ids(response) == []
    assert "Create your first API key" in response.content.decode()


def test_a_revoked_key_row_stays_in_the_database(owner_client: Client, owner_key: ApiKey) -> None:
    owner_client.post(f"/keys/{owner_key.pk}/revoke/")

    assert ApiKey.objects.filter(pk=owner_key.pk, revoked_at__isnull=False).count() == 1


def test_revoke_refuses_get(owner_client: Client, owner_key: ApiKey) -> None:
    response = owner_client.get(f"/keys/{owner_key.pk}/revoke/")

    assert response.status_code == 405
    owner_key.refresh_from_db()
    assert owner_key.revoked_at is None


def test_the_confirmation_url_refuses_post(owner_client: Client, owner_key: ApiKey) -> None:
    response = owner_client.post(f"/keys/{owner_key.pk}/delete/")

    assert response.status_code == 405
    owner_key.refresh_from_db()
    assert owner_key.revoked_at is None


# --- Another user's key ------------------------------------------------------------


def test_it_refuses_to_confirm_another_users_key(client_for, outsider: User, owner_key: ApiKey) -> None:
    response = client_for(outsider).get(f"/keys/{owner_key.pk}/delete/")

    assert response.status_code == 404
    assert "Production backend" not in response.content.decode()


def test_it_refuses_to_revoke_another_users_key(client_for, outsider: User, owner_key: ApiKey) -> None:
    for extra in ({}, HTMX):
        response = client_for(outsider).post(f"/keys/{owner_key.pk}/revoke/", **extra)

        assert response.status_code == 404
    owner_key.refresh_from_db()
    assert owner_key.revoked_at is None


def test_another_users_key_and_a_key_that_never_existed_look_the_same(
    client_for, outsider: User, owner_key: ApiKey
) -> None:
    client = client_for(outsider)

    theirs = client.get(f"/keys/{owner_key.pk}/delete/")
    missing = client.get(f"/keys/{owner_key.pk + 1000}/delete/")

    assert theirs.status_code == missing.status_code == 404
    assert theirs.content == missing.content


def test_revoking_a_key_already_revoked_in_another_tab_says_so_politely(
    owner_client: Client, owner_key: ApiKey
) -> None:
    assert owner_client.post(f"/keys/{owner_key.pk}/revoke/").status_code == 302
    revoked_at = ApiKey.objects.get(pk=owner_key.pk).revoked_at

    again = owner_client.post(f"/keys/{owner_key.pk}/revoke/", follow=True)

    assert again.redirect_chain == [("/keys/", 302)]
    assert "“Production backend” was already revoked. Requests using it fail." in again.content.decode()
    assert ApiKey.objects.get(pk=owner_key.pk).revoked_at == revoked_at


def test_an_htmx_revoke_of_a_revoked_key_returns_the_list_and_the_message(
    owner_client: Client, owner_key: ApiKey
) -> None:
    api_key_revoke(api_key=owner_key)

    response = owner_client.post(f"/keys/{owner_key.pk}/revoke/", **HTMX)

    content = fragment_of(response, '<section id="keys"')
    assert "Create your first API key" in content
    assert "“Production backend” was already revoked." in content


def test_the_confirmation_of_a_revoked_key_goes_back_to_the_list_with_a_message(
    owner_client: Client, owner_key: ApiKey
) -> None:
    api_key_revoke(api_key=owner_key)

    response = owner_client.get(f"/keys/{owner_key.pk}/delete/", follow=True)

    assert response.redirect_chain == [("/keys/", 302)]
    assert "“Production backend” was already revoked." in response.content.decode()


def test_an_htmx_confirmation_of_a_revoked_key_says_so_and_refreshes_the_list(
    owner_client: Client, owner: User, owner_key: ApiKey, make_key
) -> None:
    other, _ = make_key(owner, "Staging")
    api_key_revoke(api_key=owner_key)

    response = owner_client.get(f"/keys/{owner_key.pk}/delete/", **HTMX)

    content = fragment_of(response, '<dialog class="delete-dialog"')
    assert "This key is already revoked" in content
    assert "/revoke/" not in content
    assert 'hx-swap-oob="outerHTML"' in content
    assert row_ids(response) == [other.pk]


# --- CSRF --------------------------------------------------------------------------


@pytest.fixture
def csrf_client(client_for, owner: User) -> Client:
    return client_for(owner, enforce_csrf_checks=True)


def test_every_post_without_a_csrf_token_is_refused(csrf_client: Client, owner_key: ApiKey) -> None:
    for extra in ({}, HTMX):
        assert csrf_client.post("/keys/create/", {"name": "Forged"}, **extra).status_code == 403
        assert csrf_client.post(f"/keys/{owner_key.pk}/revoke/", **extra).status_code == 403

    assert ApiKey.objects.count() == 1
    owner_key.refresh_from_db()
    assert owner_key.revoked_at is None


def test_a_post_with_the_pages_csrf_token_is_accepted(csrf_client: Client, owner_key: ApiKey) -> None:
    page = csrf_client.get("/keys/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    header_token = re.search(r'"x-csrftoken": "([^"]+)"', page.content.decode()).group(1)

    created = csrf_client.post("/keys/create/", {"name": "Real", "csrfmiddlewaretoken": token})
    # htmx sends the token from <body hx-headers> as a header instead.
    revoked = csrf_client.post(f"/keys/{owner_key.pk}/revoke/", HTTP_X_CSRFTOKEN=header_token, **HTMX)

    assert created.status_code == 200
    assert revoked.status_code == 200
    assert ApiKey.objects.active().get().name == "Real"
