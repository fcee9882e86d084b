"""/keys/: create with settings, edit in a dialog (and as a page), roll, and the Revoked filter."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.test import Client

from apikeys.keys import hash_key
from apikeys.models import ApiKey
from apikeys.services import api_key_authenticate, api_key_revoke, api_key_update
from billing.models import ServedModel
from billing.seed import SEED, ensure

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
RAW_KEY = re.compile(r"dos_sk_[A-Za-z0-9]{32}")


@pytest.fixture(autouse=True)
def _models(db: None) -> None:
    for row in SEED:
        ensure(ServedModel, row)


@pytest.fixture
def owner_client(client_for, owner) -> Client:
    return client_for(owner)


def test_a_key_is_created_with_its_advanced_settings(owner_client: Client, owner) -> None:
    response = owner_client.post(
        "/keys/create/",
        {
            "name": "Batch jobs",
            "expiry": "30",
            "spend_limit": "2.5",
            "spend_period": "week",
            "model_scope": "some",
            "allowed_models": ["dos-ai"],
            "max_concurrency": "3",
            "allowed_ips": "203.0.113.0/24\n2001:db8::/32",
        },
    )

    assert response.status_code == 200
    api_key = ApiKey.objects.get(owner=owner)
    assert api_key.expires_at - dt.datetime.now(dt.UTC) > dt.timedelta(days=29, hours=23)
    assert (api_key.spend_limit_micros, api_key.spend_period) == (2_500_000, "week")
    assert (api_key.allowed_models, api_key.max_concurrency) == (["dos-ai"], 3)
    assert api_key.allowed_ips == ["203.0.113.0/24", "2001:db8::/32"]
    page = owner_client.get("/keys/").content.decode()
    assert "expires in 4\xa0weeks, 2\xa0days" in page or "expires in 4\xa0weeks" in page
    assert "$0.00 / $2.50 this week" in page
    assert "max 3 in flight" in page


def test_only_a_name_makes_a_key_for_all_models_and_some_models_with_none_ticked_is_an_error(
    owner_client: Client, owner
) -> None:
    owner_client.post("/keys/create/", {"name": "Plain"})
    refused = owner_client.post("/keys/create/", {"name": "Picky", "model_scope": "some"})

    assert ApiKey.objects.get(name="Plain").allowed_models is None
    assert "Tick at least one model, or choose “All models”." in refused.content.decode()
    assert not ApiKey.objects.filter(name="Picky").exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"allowed_ips": "10.0.0.300"}, "Not an IP address or CIDR range: &#x27;10.0.0.300&#x27;."),
        ({"expiry": "date", "expires_on": ""}, "Choose the date, or another expiry."),
        ({"expiry": "date", "expires_on": "2001-01-01"}, "Choose an expiry time in the future."),
        ({"max_concurrency": "0"}, "Ensure this value is greater than or equal to 1."),
        ({"spend_limit": "-1"}, "Ensure this value is greater than or equal to 0."),
    ],
)
def test_bad_settings_are_form_errors_not_keys(owner_client: Client, data, message) -> None:
    response = owner_client.post("/keys/create/", {"name": "Bad", **data})
    assert response.status_code == 200
    assert message in response.content.decode()
    assert '<details class="key-advanced" open>' in response.content.decode()  # opened to show the error
    assert not ApiKey.objects.exists()
    assert not RAW_KEY.search(response.content.decode())


def test_a_name_error_leaves_the_advanced_settings_closed(owner_client: Client) -> None:
    response = owner_client.post("/keys/create/", {"name": "  ", "allowed_ips": "10.0.0.1"})

    content = response.content.decode()
    assert "Give the key a name, e.g. “Production backend”." in content
    assert '<details class="key-advanced">' in content
    assert ">\n10.0.0.1</textarea>" in content  # kept for the next try


def test_a_name_is_unique_among_active_keys_only(owner_client: Client, owner, make_key) -> None:
    old, _ = make_key(owner, "Prod")
    taken = owner_client.post("/keys/create/", {"name": "Prod"})
    api_key_revoke(api_key=old)
    reused = owner_client.post("/keys/create/", {"name": "Prod"})

    assert "You already have an active key named “Prod”. Choose another name." in taken.content.decode()
    assert reused.status_code == 200
    assert ApiKey.objects.filter(owner=owner, name="Prod").count() == 2


def test_the_edit_dialog_saves_settings_and_a_plain_post_redirects(owner_client: Client, owner, make_key) -> None:
    api_key, _ = make_key(owner, "Prod")
    make_key(owner, "Staging")

    dialog = owner_client.get(f"/keys/{api_key.pk}/edit/", **HTMX)
    page = owner_client.get(f"/keys/{api_key.pk}/edit/")
    clash = owner_client.post(f"/keys/{api_key.pk}/edit/", {"name": "Staging"}, **HTMX)
    saved = owner_client.post(
        f"/keys/{api_key.pk}/edit/",
        {"name": "Production", "expiry": "never", "spend_limit": "1", "spend_period": "day", "model_scope": "all"},
        **HTMX,
    )
    plain = owner_client.post(f"/keys/{api_key.pk}/edit/", {"name": "Production", "max_concurrency": "5"})

    assert dialog.content.decode().lstrip().startswith('<dialog class="settings-dialog" data-modal')
    assert "<html" in page.content.decode() and 'id="key-edit-form"' in page.content.decode()
    assert "You already have an active key named “Staging”." in clash.content.decode()
    assert clash["HX-Retarget"] == "#key-edit-form"
    assert saved["HX-Redirect"] == "/keys/"
    assert plain.status_code == 302 and plain["Location"] == "/keys/"
    api_key.refresh_from_db()
    # The plain post sent no spend limit: blank means none.
    assert (api_key.name, api_key.spend_limit_micros, api_key.max_concurrency) == ("Production", None, 5)


def test_an_existing_expiry_is_kept_unless_changed(owner_client: Client, owner, make_key) -> None:
    api_key, _ = make_key(owner, "Prod")
    expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(hours=5)
    api_key_update(api_key=api_key, expires_at=expires_at)

    owner_client.post(f"/keys/{api_key.pk}/edit/", {"name": "Prod", "expiry": "keep"})

    api_key.refresh_from_db()
    assert api_key.expires_at == expires_at


def test_roll_shows_the_new_key_once_and_keeps_the_old_one_for_the_grace(owner_client: Client, owner, make_key) -> None:
    api_key, old_raw = make_key(owner, "Prod")

    confirm = owner_client.get(f"/keys/{api_key.pk}/roll/", **HTMX)
    rolled = owner_client.post(f"/keys/{api_key.pk}/roll/", {"grace": "24"}, **HTMX)

    assert confirm.content.decode().lstrip().startswith('<dialog class="settings-dialog" data-modal')
    (new_raw,) = set(RAW_KEY.findall(rolled.content.decode()))
    assert "no-store" in rolled["Cache-Control"]
    assert 'id="dialog-slot" hx-swap-oob="true"' in rolled.content.decode()
    assert api_key_authenticate(new_raw) == api_key
    assert api_key_authenticate(old_raw) == api_key
    assert ApiKey.objects.get(pk=api_key.pk).previous_hashed_key == hash_key(old_raw)
    listing = owner_client.get("/keys/").content.decode()
    assert "old secret valid until" in listing
    assert not RAW_KEY.search(listing)


def test_a_plain_roll_without_grace_renders_a_page(owner_client: Client, owner, make_key) -> None:
    api_key, old_raw = make_key(owner, "Prod")
    rolled = owner_client.post(f"/keys/{api_key.pk}/roll/", {"grace": "0"})
    bad = owner_client.post(f"/keys/{api_key.pk}/roll/", {"grace": "5"})

    assert "<html" in rolled.content.decode()
    assert "The old secret has stopped working." in rolled.content.decode()
    assert api_key_authenticate(old_raw) is None
    assert bad.status_code == 200 and "Select a valid choice." in bad.content.decode()


def test_revoked_keys_are_listed_greyed_under_their_filter(owner_client: Client, owner, make_key) -> None:
    make_key(owner, "Kept")
    gone, _ = make_key(owner, "Gone")
    api_key_revoke(api_key=gone)

    active = owner_client.get("/keys/").content.decode()
    revoked = owner_client.get("/keys/?status=revoked").content.decode()

    assert "Revoked (1)" in active and 'class="revoked-row"' not in active
    assert revoked.count('class="revoked-row"') == 1
    assert "Gone" in revoked and gone.revoked_at.strftime("%Y") in revoked


def test_another_users_key_is_404_for_edit_and_roll(client_for, outsider, owner, make_key) -> None:
    api_key, _ = make_key(owner, "Prod")
    client = client_for(outsider)
    for url in (f"/keys/{api_key.pk}/edit/", f"/keys/{api_key.pk}/roll/"):
        assert client.get(url).status_code == 404
        assert client.post(url, {"name": "Mine", "grace": "0"}).status_code == 404
    assert ApiKey.objects.get(pk=api_key.pk).name == "Prod"


def test_an_htmx_revoke_brings_the_revoked_filter_above_the_list_without_a_reload(
    owner_client: Client, owner, make_key
) -> None:
    make_key(owner, "Kept")
    gone, _ = make_key(owner, "Gone")
    before = owner_client.get("/keys/").content.decode()

    response = owner_client.post(f"/keys/{gone.pk}/revoke/", HTTP_HX_REQUEST="true")
    html = response.content.decode()

    # Before: the filter's place is there, empty, above the list.
    assert re.search(r'<div id="key-filter">\s*</div>', before)
    assert before.index('id="key-filter"') < before.index('id="keys"')
    # The answer replaces it out of band, with the revoked key counted.
    fragment = re.search(r'<div id="key-filter" hx-swap-oob="outerHTML">(.*?)</div>', html, re.S)
    assert fragment, html
    assert '<a href="/keys/?status=revoked">Revoked (1)</a>' in fragment.group(1)
    assert 'id="key-filter"' in owner_client.get("/keys/").content.decode()


def test_the_revoked_table_is_stacked_on_a_phone_with_its_revocation_date_labelled(
    owner_client: Client, owner, make_key
) -> None:
    gone, _ = make_key(owner, "Gone")
    api_key_revoke(api_key=gone)

    html = owner_client.get("/keys/?status=revoked").content.decode()

    assert re.search(r'<table class="[^"]*table-stack[^"]*revoked-table', html)
    assert '<td data-label="Revoked"><time class="nowrap"' in html
    assert html.index('id="key-filter"') < html.index('class="revoked-row"')
