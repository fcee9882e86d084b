"""After a revoke over htmx the "Revoked" filter is there at once, above the list; on a phone
the revoked table is stacked, so the revocation date is on screen. At 1280 and 390 px, with
screenshots in test-artifacts/keys-revoked-filter-*.png."""

from __future__ import annotations

from pathlib import Path

import pytest

from accounts.models import User
from apikeys.services import api_key_create
from apikeys.tests.test_browser_key_settings import EMAIL, no_sideways_scroll, signed_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("width", [1280, 390])
def test_the_revoked_filter_appears_above_the_list_after_an_htmx_revoke(
    browser, live_server, artifacts_dir: Path, width: int
) -> None:
    from playwright.sync_api import expect

    context, page = signed_in(browser, live_server, width)
    owner = User.objects.get(email=EMAIL)
    api_key_create(owner=owner, name="Kept")
    api_key_create(owner=owner, name="Old laptop")
    page.goto(f"{live_server.url}/keys/")
    expect(page.get_by_role("link", name="Revoked (1)")).to_have_count(0)

    page.get_by_role("link", name="Revoke Old laptop").click()
    page.locator("dialog").get_by_role("button", name="Revoke key").click()
    expect(page.locator("#messages")).to_contain_text("Revoked “Old laptop”.")

    revoked_link = page.get_by_role("link", name="Revoked (1)")
    expect(revoked_link).to_be_visible()  # no reload
    assert revoked_link.bounding_box()["y"] < page.locator("#keys").bounding_box()["y"]
    page.screenshot(path=artifacts_dir / f"keys-revoked-filter-{width}.png", full_page=True)

    revoked_link.click()
    revoked_at = page.locator(".revoked-row time")
    expect(revoked_at).to_be_visible()
    box = revoked_at.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= width, box  # on screen, not scrolled off
    no_sideways_scroll(page)
    page.screenshot(path=artifacts_dir / f"keys-revoked-list-{width}.png", full_page=True)
    context.close()
