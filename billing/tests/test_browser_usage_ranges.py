"""The usage page's date ranges in Debian's chromium at 1280 and 390 px: the presets, the key
filter keeping the range over HTMX, a custom range, a refused one, and no sideways scroll.
Screenshots in test-artifacts/ (usage-range-*.png). "Today" is 2026-03-10 (see
test_usage_ranges.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from accounts.models import User
from apikeys.models import ApiKey
from billing.tests.test_browser_pages import sign_in
from billing.tests.test_usage_ranges import seeded, today  # noqa: F401 - fixtures used below

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("width", [1280, 390])
def test_choosing_ranges_in_a_browser(
    live_server,
    page,
    artifacts_dir: Path,
    seeded: ApiKey,  # noqa: F811 - the fixture imported above
    owner: User,
    width: int,
) -> None:
    from playwright.sync_api import expect

    page.set_viewport_size({"width": width, "height": 900})
    sign_in(page, live_server, owner)
    page.goto(f"{live_server.url}/usage/?range=7d")
    requests = page.locator('[data-total="requests"]')
    expect(requests).to_have_text("3")
    expect(page.locator(".range-chip[aria-current]")).to_have_text("Last 7 days")

    page.get_by_role("link", name="Last month").click()
    expect(page).to_have_url(f"{live_server.url}/usage/?range=last-month")
    expect(requests).to_have_text("24")
    expect(page.locator("#usage-range-summary")).to_have_text("Last month: Feb 1, 2026 – Feb 28, 2026 (UTC)")

    # The key filter swaps the body over HTMX and keeps the range in the address bar.
    page.get_by_label("API key").select_option(str(seeded.pk))
    expect(page).to_have_url(f"{live_server.url}/usage/?range=last-month&key={seeded.pk}")
    expect(page.locator(".usage-scope")).to_contain_text("Production backend")
    expect(requests).to_have_text("24")
    expect(page.locator("#usage-export")).to_have_attribute(
        "href", f"/usage/export.csv?from=2026-02-01&to=2026-02-28&key={seeded.pk}"
    )

    page.get_by_text("Custom range", exact=True).click()
    page.get_by_label("From").fill("2026-01-31")
    page.get_by_label("To", exact=True).fill("2026-02-01")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(f"{live_server.url}/usage/?range=custom&key={seeded.pk}&from=2026-01-31&to=2026-02-01")
    expect(requests).to_have_text("48")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    page.screenshot(path=artifacts_dir / f"usage-range-{width}.png", full_page=True)

    # A reversed range: the error on the page, the last 30 days below it.
    page.get_by_label("From").fill("2026-03-05")
    page.get_by_label("To", exact=True).fill("2026-03-01")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("alert")).to_contain_text("The start (2026-03-05) is after the end (2026-03-01).")
    expect(requests).to_have_text("15")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    page.screenshot(path=artifacts_dir / f"usage-range-error-{width}.png", full_page=True)
