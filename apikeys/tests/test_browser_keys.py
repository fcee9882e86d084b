"""A new user makes, copies, sees and deletes a key in Debian's chromium, with and without JavaScript."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from accounts.models import User
from apikeys.keys import KEY_PATTERN, is_well_formed
from apikeys.models import ApiKey
from apikeys.services import api_key_authenticate

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

EMAIL = "grace@example.com"
PASSWORD = "violet-harbour-lantern-93"
CONFIRMATION = "Revoke 'Production backend'? Requests using it will fail immediately."


def sign_up(page, live_server, mailoutbox) -> None:
    """Sign up, then open the confirmation link from the captured email (it signs the user in)."""
    from playwright.sync_api import expect

    page.goto(f"{live_server.url}/signup/")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("h1")).to_have_text("Check your inbox")
    page.goto(re.search(r"https?://\S+/accounts/confirm-email/\S+/", mailoutbox[-1].body).group(0))
    page.get_by_role("button", name="Confirm").click()
    expect(page).to_have_url(f"{live_server.url}/")


def test_a_new_user_creates_copies_lists_and_deletes_a_key(live_server, page, artifacts_dir: Path, mailoutbox) -> None:
    from playwright.sync_api import expect

    sign_up(page, live_server, mailoutbox)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="API keys").click()
    expect(page).to_have_url(f"{live_server.url}/keys/")
    expect(page.get_by_role("heading", name="Create your first API key")).to_be_visible()
    # keys.css is served and applied (live_server runs with DEBUG off).
    assert page.locator(".key-create-form").evaluate("el => getComputedStyle(el).display") == "grid"

    # A first key, through the empty state's form; it has been used a few minutes ago.
    page.get_by_label("Key name").fill("Staging")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#keys tbody tr")).to_have_count(1)
    ApiKey.objects.filter(name="Staging").update(
        created_at=timezone.now() - timedelta(days=3), last_used_at=timezone.now() - timedelta(minutes=7)
    )

    # The key this test follows, through the form above the list.
    page.get_by_label("Key name").fill("Production backend")
    page.get_by_role("button", name="Create key").click()

    panel = page.locator(".key-reveal")
    expect(panel).to_contain_text("Key “Production backend” created")
    expect(panel).to_contain_text("it will not be shown again")
    shown_key = page.locator("#new-key-value").inner_text().strip()
    assert KEY_PATTERN.fullmatch(shown_key)
    expect(panel.locator("#qs-python")).to_be_visible()
    expect(panel).to_contain_text(f'export DOS_AI_API_KEY="{shown_key}"')
    # The list came out of band in the create response (no reload, no second request): newest first.
    rows = page.locator("#keys tbody tr")
    expect(rows).to_have_count(2)
    api_key = ApiKey.objects.get(owner__email=EMAIL, name="Production backend")
    expect(rows.first).to_contain_text("Production backend")
    expect(rows.first).to_contain_text(api_key.hint)
    expect(rows.first).to_contain_text("Never")
    expect(rows.last).to_contain_text("Staging")
    expect(rows.last).to_contain_text("7\xa0minutes ago")
    assert api_key.hint == f"dos_sk_{shown_key[7:11]}…{shown_key[-4:]}"
    # Keyboard users land on the copy button, and the whole panel is in view, title included.
    copy_button = page.locator('button[data-copy-target="new-key-value"]')
    expect(copy_button).to_have_accessible_name("Copy key")
    expect(copy_button).to_be_focused()
    expect(page.get_by_role("heading", name="Key “Production backend” created")).to_be_in_viewport()
    assert page.evaluate("window.scrollY") == 0
    page.screenshot(path=artifacts_dir / "keys-created.png", full_page=True)

    copy_button.click()

    expect(copy_button).to_have_attribute("data-copied", "true")
    expect(copy_button).to_have_text("Copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == shown_key
    assert is_well_formed(copied)
    assert api_key_authenticate(copied) == api_key

    # "Done" reloads the page: the key is gone for good, its hint stays in the list.
    page.get_by_role("link", name="Done, I have saved it").click()
    expect(page.locator(".key-reveal")).to_have_count(0)
    assert shown_key not in page.content()
    expect(page.locator("#keys tbody tr").first).to_contain_text(api_key.hint)
    page.screenshot(path=artifacts_dir / "keys-list.png", full_page=True)

    page.get_by_role("link", name="Revoke Production backend").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(CONFIRMATION)
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    page.screenshot(path=artifacts_dir / "keys-delete-dialog.png")
    dialog.get_by_role("button", name="Revoke key").click()

    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(page.locator("#keys tbody tr")).to_have_count(1)
    # Focus does not fall back to the top of the document with the removed row.
    expect(page.get_by_role("heading", name="Your keys")).to_be_focused()
    expect(page.get_by_text("Production backend")).to_have_count(1)  # in the message only
    expect(page.get_by_role("status")).to_contain_text("Revoked “Production backend”. Requests using it now fail.")
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    assert api_key_authenticate(shown_key) is None

    # The last key goes the same way, and the empty state comes back.
    page.get_by_role("link", name="Revoke Staging").click()
    expect(page.get_by_role("dialog")).to_contain_text("Revoke 'Staging'? Requests using it will fail immediately.")
    page.get_by_role("dialog").get_by_role("button", name="Revoke key").click()
    expect(page.locator("#keys tbody tr")).to_have_count(0)
    expect(page.get_by_role("heading", name="Create your first API key")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("Revoked “Staging”.")
    assert ApiKey.objects.filter(owner__email=EMAIL, revoked_at__isnull=True).count() == 0
    page.screenshot(path=artifacts_dir / "keys-empty.png", full_page=True)


def test_cancelling_the_confirmation_keeps_the_key(live_server, page, mailoutbox) -> None:
    from playwright.sync_api import expect

    sign_up(page, live_server, mailoutbox)
    page.goto(f"{live_server.url}/keys/")
    page.get_by_label("Key name").fill("Production backend")
    page.get_by_label("Key name").press("Enter")
    expect(page.locator("#keys tbody tr")).to_have_count(1)

    page.get_by_role("link", name="Revoke Production backend").click()
    expect(page.get_by_role("dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)
    page.get_by_role("link", name="Revoke Production backend").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()

    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(page.locator("#keys tbody tr")).to_have_count(1)
    # Closing the dialog gives focus back to the Revoke link that opened it.
    expect(page.get_by_role("link", name="Revoke Production backend")).to_be_focused()
    assert ApiKey.objects.get().revoked_at is None


def test_an_invalid_name_shows_an_inline_error_in_the_browser(live_server, page, mailoutbox) -> None:
    from playwright.sync_api import expect

    sign_up(page, live_server, mailoutbox)
    page.goto(f"{live_server.url}/keys/")
    page.get_by_role("button", name="Create key").click()

    expect(page.get_by_role("alert")).to_have_text("Give the key a name, e.g. “Production backend”.")
    expect(page.get_by_label("Key name")).to_have_attribute("aria-invalid", "true")
    assert ApiKey.objects.count() == 0


def test_everything_works_with_javascript_off(live_server, browser, artifacts_dir: Path, mailoutbox) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        sign_up(page, live_server, mailoutbox)
        page.goto(f"{live_server.url}/keys/")
        page.get_by_label("Key name").fill("Production backend")
        page.get_by_role("button", name="Create key").click()

        # The key is in the POST response itself.
        expect(page).to_have_url(f"{live_server.url}/keys/create/")
        shown_key = page.locator("#new-key-value").inner_text().strip()
        assert api_key_authenticate(shown_key) == ApiKey.objects.get()
        # The copy button needs JavaScript, so it is hidden; the key is there to select.
        expect(page.get_by_role("button", name="Copy key")).to_be_hidden()
        expect(page.locator("#keys tbody tr")).to_have_count(1)
        page.screenshot(path=artifacts_dir / "keys-created-nojs.png", full_page=True)

        page.get_by_role("link", name="Revoke Production backend").click()
        expect(page).to_have_url(f"{live_server.url}/keys/{ApiKey.objects.get().pk}/delete/")
        expect(page.locator("main")).to_contain_text(CONFIRMATION)
        page.screenshot(path=artifacts_dir / "keys-delete-nojs.png", full_page=True)
        page.get_by_role("button", name="Revoke key").click()

        expect(page).to_have_url(f"{live_server.url}/keys/")
        expect(page.get_by_role("status")).to_contain_text("Revoked “Production backend”.")
        expect(page.get_by_role("heading", name="Create your first API key")).to_be_visible()
        assert shown_key not in page.content()
        assert ApiKey.objects.get().revoked_at is not None
        assert User.objects.get(email=EMAIL).api_keys.active().count() == 0
    finally:
        context.close()
