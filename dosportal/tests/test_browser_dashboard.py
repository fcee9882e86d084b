"""Every dashboard page, with seeded usage, in Debian's chromium at a desktop's 1280 px and a
phone's 390 px: no Content-Security-Policy violation, no sideways scrolling, the key columns
on screen. Screenshots go to test-artifacts/dashboard/ for a human to look at."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from accounts.models import User
from apikeys.models import ApiKey
from billing.models import CreditAccount, LedgerEntry, ServedModel
from billing.services import credits_grant
from billing.tests.conftest import History, settle_usage
from conftest import record_sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTHS = {"desktop": 1280, "phone": 390}

# Every CSP violation the page reports, recorded before any of its own scripts run.
CSP_RECORDER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__cspViolations.push(e.violatedDirective + " " + (e.blockedURI || "inline") + " " + (e.sample || ""));
});
"""


def sign_in(page, live_server, user: User) -> None:
    client = Client()
    client.force_login(user)
    record_sign_in(client, user)  # a fresh sign-in, as the form would record: key creation needs one
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    page.context.add_cookies([{"name": cookie.key, "value": cookie.value, "url": live_server.url}])


def seed_ledger(owner: User, seeded: History) -> None:
    """Real charges (so the ledger has rolled-up usage lines), a top-up, and a balance low
    enough for the overview's warning."""
    ServedModel.objects.get_or_create(
        name="dos-ai",
        defaults={"input_price_micros_per_million": 500_000, "output_price_micros_per_million": 1_500_000},
    )
    credits_grant(user=owner, amount_micros=10_000_000, kind=LedgerEntry.Kind.TOPUP, note="Invoice 2026-0142")
    for index in range(6):
        settle_usage(seeded.production, f"req_browser_{index}")
    ApiKey.objects.filter(pk=seeded.production.pk).update(last_used_at=dt.datetime.now(dt.UTC))
    # $0.05 left against about $0.04 a day of spend: "running low".
    account = CreditAccount.objects.get(user=owner)
    credits_grant(
        user=owner, amount_micros=50_000 - account.balance_micros, kind=LedgerEntry.Kind.ADJUSTMENT, note="Test"
    )


@pytest.fixture
def shots(artifacts_dir: Path) -> Path:
    folder = artifacts_dir / "dashboard"
    folder.mkdir(exist_ok=True)
    return folder


def visit(page, url: str):
    """Open `url` with the CSP recorder armed; fail on any violation or console CSP error."""
    console_errors: list[str] = []
    page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)
    page.add_init_script(CSP_RECORDER)
    response = page.goto(url)
    assert response.status == 200, url
    page.wait_for_load_state("networkidle")
    return console_errors


def assert_clean(page, console_errors: list[str], url: str) -> None:
    assert page.evaluate("window.__cspViolations") == [], url
    assert [text for text in console_errors if "Content Security Policy" in text or "Refused to" in text] == [], url
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (
        url,
        page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]"),
    )


def assert_on_screen(page, selector: str) -> None:
    """Every element matching `selector` lies within the viewport's width (not cut, not off to the side)."""
    width = page.evaluate("window.innerWidth")
    locator = page.locator(selector)
    count = locator.count()
    assert count, f"nothing matches {selector}"
    for index in range(count):
        element = locator.nth(index)
        if not element.is_visible():
            continue
        box = element.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, (selector, index, box, width)


@pytest.mark.parametrize("device", list(WIDTHS))
def test_every_dashboard_page_fits_the_screen_and_breaks_no_policy(
    live_server,
    page,
    shots: Path,
    history: History,
    owner: User,
    device: str,
) -> None:
    from playwright.sync_api import expect

    seed_ledger(owner, history)
    page.set_viewport_size({"width": WIDTHS[device], "height": 900 if device == "desktop" else 844})
    sign_in(page, live_server, owner)
    base = live_server.url
    pages = {
        "overview": "/",
        "keys": "/keys/",
        "key-delete": f"/keys/{history.production.pk}/delete/",
        "usage": "/usage/",
        "usage-key": f"/usage/?key={history.leaked.pk}",
        "billing": "/billing/",
        "settings": "/settings/",
        "settings-alerts": "/settings/alerts/",
    }
    for name, path in pages.items():
        errors = visit(page, base + path)
        assert_clean(page, errors, path)
        page.screenshot(path=shots / f"{name}-{device}.png", full_page=True)

        if name == "overview":
            expect(page.locator("#low-balance")).to_contain_text("Your credit is running low.")
            assert_on_screen(page, "[data-stat]")
            assert_on_screen(page, "#recent-keys li > *")
        elif name == "keys":
            assert_on_screen(page, ".keys-table td")
            expect(page.locator(".keys-table td.key-name").first).to_have_text("Production backend")
            # The name reads on one line: its cell is wider than a few characters.
            assert page.locator(".keys-table td.key-name").first.bounding_box()["width"] > 150
        elif name in ("usage", "usage-key"):
            assert_on_screen(page, "#usage-daily td")
            assert_on_screen(page, "#usage-by-model td")
            assert_on_screen(page, ".usage-chart-wide" if device == "desktop" else ".usage-chart-narrow")
            chart = page.locator("#panel-requests svg:visible")
            expect(chart).to_have_count(1)
            # The whole month fits: the first and the last day's columns are both on screen.
            hits = chart.locator("rect.hit")
            assert_on_screen(page, "#panel-requests svg:visible rect.hit")
            # A tap (click) on a day says its exact value; no hover needed.
            hits.nth(26).click()
            expect(page.locator("[data-chart-readout]")).to_have_text(
                f"{history.day(3):%a}, {history.day(3):%b} {history.day(3).day}: " + "200 requests — spike"
            )
            if name == "usage":
                assert_on_screen(page, "#usage-by-key td:visible")
        elif name == "billing":
            assert_on_screen(page, "#ledger-table td")
            assert_on_screen(page, "#ledger-table td.amount")
        elif name == "settings":
            expect(page.locator("#alerts")).to_be_visible()


def test_the_pages_of_people_not_signed_in_break_no_policy(live_server, page, shots: Path) -> None:
    for device, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 844})
        for path in ("/login/", "/signup/", "/password-reset/"):
            errors = visit(page, live_server.url + path)
            assert_clean(page, errors, path)
        page.screenshot(path=shots / f"login-{device}.png", full_page=True)


def test_a_new_key_and_its_quickstart_on_a_phone(live_server, page, shots: Path, owner: User) -> None:
    from playwright.sync_api import expect

    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, live_server, owner)
    errors = visit(page, f"{live_server.url}/keys/")
    page.get_by_label("Key name").fill("Phone test")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator(".key-reveal")).to_be_visible()
    # The list came in the same response, out of band.
    expect(page.locator("#keys tbody tr")).to_have_count(1)

    assert_clean(page, errors, "/keys/ after create")
    tabs = page.locator(".key-reveal [role=tab]")
    copy = page.locator(".key-reveal .code-window-bar .btn-copy")
    curl_box, copy_box = tabs.last.bounding_box(), copy.bounding_box()
    expect(tabs.last).to_have_text("curl")
    assert curl_box["x"] + curl_box["width"] <= copy_box["x"], (curl_box, copy_box)
    tabs.last.click()
    expect(page.locator(".key-reveal #qs-curl")).to_be_visible()
    page.screenshot(path=shots / "key-created-phone.png", full_page=True)

    # Deleting it from this tab after another tab revoked it: a polite dialog, not an error page.
    api_key = ApiKey.objects.get(name="Phone test")
    ApiKey.objects.filter(pk=api_key.pk).update(revoked_at=dt.datetime.now(dt.UTC))
    page.get_by_role("link", name="Done, I have saved it").click()
    ApiKey.objects.filter(pk=api_key.pk).update(revoked_at=None)
    page.reload()
    ApiKey.objects.filter(pk=api_key.pk).update(revoked_at=dt.datetime.now(dt.UTC))
    page.get_by_role("link", name="Revoke Phone test").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("This key is already revoked")
    expect(page.locator("#keys tbody tr")).to_have_count(0)
    page.screenshot(path=shots / "key-already-revoked-phone.png")
    dialog.get_by_role("button", name="Close").click()
    expect(page.get_by_role("dialog")).to_have_count(0)


def test_the_admin_breaks_no_policy_and_fits_1280(live_server, page, shots: Path, history: History) -> None:
    admin_user = User.objects.create_superuser("admin@example.com", "admin-password-1")
    sign_in(page, live_server, admin_user)
    paths = {
        "admin-index": "/admin/",
        "admin-keys": "/admin/apikeys/apikey/",
        "admin-key": f"/admin/apikeys/apikey/{history.production.pk}/change/",
        "admin-usage": "/admin/billing/usagerecord/",
        "admin-ledger": "/admin/billing/ledgerentry/",
        "admin-credit": f"/admin/billing/creditaccount/{history.production.owner_id}/change/",
        "admin-alerts": "/admin/billing/alertsettings/add/",
    }
    for name, path in paths.items():
        errors = visit(page, live_server.url + path)
        assert page.evaluate("window.__cspViolations") == [], path
        assert [text for text in errors if "Content Security Policy" in text] == [], path
        page.screenshot(path=shots / f"{name}.png", full_page=True)
    # The usage list's useful columns are on screen at 1280 px, beside the filters.
    page.goto(live_server.url + "/admin/billing/usagerecord/")
    for column in ("status_code", "model", "cost", "tokens", "key"):
        box = page.locator(f"th.column-{column}").bounding_box()
        assert box["x"] + box["width"] <= 1280, column
