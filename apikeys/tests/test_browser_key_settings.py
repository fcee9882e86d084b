"""A key's settings in Debian's chromium: create with advanced settings, edit in a dialog,
roll, the Revoked filter; at 1280 and 390 px (no sideways scroll), and without JavaScript."""

from __future__ import annotations

from pathlib import Path

import pytest

from accounts.models import User
from apikeys.keys import KEY_PATTERN
from apikeys.models import ApiKey
from apikeys.services import api_key_authenticate, api_key_create, api_key_revoke
from billing.models import ServedModel
from billing.seed import SEED, ensure

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

EMAIL = "ada@example.com"
PASSWORD = "violet-harbour-lantern-93"
SHOTS = Path("/tmp/keys-shots")


def signed_in(browser, live_server, width: int, javascript: bool = True):
    for row in SEED:
        ensure(ServedModel, row)
    if not User.objects.filter(email=EMAIL).exists():
        User.objects.create_user(EMAIL, PASSWORD)
    context = browser.new_context(viewport={"width": width, "height": 900}, java_script_enabled=javascript)
    page = context.new_page()
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")
    return context, page


WIDE = """() => Array.from(document.querySelectorAll('body *')).filter(el => {
  const box = el.getBoundingClientRect();
  if (!(box.width > 0 && box.right > window.innerWidth + 1)) return false;
  for (let up = el.parentElement; up && up !== document.body; up = up.parentElement) {
    if (['auto', 'scroll', 'hidden'].includes(getComputedStyle(up).overflowX)) return false;
  }
  return true;
}).slice(0, 8).map(el => el.tagName + '.' + el.className + ' ' + Math.round(el.getBoundingClientRect().right))"""


def no_sideways_scroll(page) -> None:
    wide = page.evaluate(WIDE)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), wide


@pytest.mark.parametrize("width", [1280, 390])
def test_create_edit_roll_and_revoked_filter(browser, live_server, width: int) -> None:
    from playwright.sync_api import expect

    SHOTS.mkdir(exist_ok=True)
    context, page = signed_in(browser, live_server, width)
    owner = User.objects.get(email=EMAIL)
    old, _ = api_key_create(owner=owner, name="Old laptop")
    api_key_revoke(api_key=old)
    page.goto(f"{live_server.url}/keys/")

    page.get_by_label("Key name").fill("Batch jobs")
    page.locator("details.key-advanced > summary").first.click()
    page.get_by_label("Spend limit (USD)").fill("2.50")
    page.get_by_label("Per").select_option("week")
    page.get_by_label("Max concurrent requests").fill("3")
    page.get_by_label("Allowed IP addresses").fill("203.0.113.0/24")
    page.screenshot(path=SHOTS / f"create-advanced-{width}.png", full_page=True)
    no_sideways_scroll(page)
    page.get_by_role("button", name="Create key").click()
    expect(page.locator(".key-reveal")).to_contain_text("Key “Batch jobs” created")
    expect(page.locator("#keys")).to_contain_text("$0.00 / $2.50 this week")
    api_key = ApiKey.objects.get(owner=owner, name="Batch jobs")
    assert (api_key.spend_limit_micros, api_key.max_concurrency) == (2_500_000, 3)
    page.screenshot(path=SHOTS / f"keys-list-{width}.png", full_page=True)
    no_sideways_scroll(page)

    page.get_by_role("link", name="Edit Batch jobs").click()
    dialog = page.locator("dialog.settings-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Only the models ticked below").check()
    dialog.get_by_label("dos-ai", exact=True).check()
    page.screenshot(path=SHOTS / f"edit-dialog-{width}.png")
    no_sideways_scroll(page)
    dialog.get_by_role("button", name="Save settings").click()
    expect(page.locator("#messages")).to_contain_text("Saved the settings of “Batch jobs”.")
    expect(page.locator("#keys")).to_contain_text("1 model")
    assert ApiKey.objects.get(pk=api_key.pk).allowed_models == ["dos-ai"]

    page.get_by_role("link", name="Roll Batch jobs").click()
    dialog = page.locator("dialog.settings-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("For 1 hour").check()
    page.screenshot(path=SHOTS / f"roll-dialog-{width}.png")
    dialog.get_by_role("button", name="Roll key").click()
    expect(page.locator(".key-reveal")).to_contain_text("New secret for “Batch jobs”")
    expect(page.locator("dialog.settings-dialog")).to_have_count(0)
    new_key = page.locator("#rolled-key-value").inner_text().strip()
    assert KEY_PATTERN.fullmatch(new_key)
    assert api_key_authenticate(new_key) == api_key
    expect(page.locator("#keys")).to_contain_text("old secret valid until")
    page.screenshot(path=SHOTS / f"rolled-{width}.png", full_page=True)
    no_sideways_scroll(page)

    page.get_by_role("link", name="Revoked (1)").click()
    expect(page.locator(".revoked-row")).to_contain_text("Old laptop")
    page.screenshot(path=SHOTS / f"revoked-{width}.png", full_page=True)
    no_sideways_scroll(page)
    context.close()


def test_edit_works_without_javascript(browser, live_server) -> None:
    from playwright.sync_api import expect

    context, page = signed_in(browser, live_server, 390, javascript=False)
    owner = User.objects.get(email=EMAIL)
    api_key, _ = api_key_create(owner=owner, name="Plain")
    page.goto(f"{live_server.url}/keys/")
    page.get_by_role("link", name="Edit Plain").click()
    expect(page).to_have_url(f"{live_server.url}/keys/{api_key.pk}/edit/")
    page.get_by_label("Max concurrent requests").fill("2")
    page.screenshot(path=SHOTS / "edit-nojs-390.png", full_page=True)
    no_sideways_scroll(page)
    page.get_by_role("button", name="Save settings").click()
    expect(page).to_have_url(f"{live_server.url}/keys/")
    expect(page.locator("#keys")).to_contain_text("max 2 in flight")
    context.close()
