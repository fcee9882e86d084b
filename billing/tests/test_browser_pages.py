"""/usage/ and /billing/ in Debian's chromium with a seeded history: the metric tabs, the key
filter over HTMX, and screenshots in test-artifacts/ for a human to look at."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from accounts.models import User
from accounts.services import account_set_limits, account_set_plan
from billing.models import LedgerEntry, ServedModel
from billing.services import credit_reserve, credits_grant
from billing.tests.conftest import History, settle_usage
from dosportal.testing.keys import key_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def sign_in(page, live_server, user: User) -> None:
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    page.context.add_cookies([{"name": cookie.key, "value": cookie.value, "url": live_server.url}])


def test_the_usage_page_in_a_browser(live_server, page, artifacts_dir: Path, history: History, owner: User) -> None:
    from playwright.sync_api import expect

    sign_in(page, live_server, owner)
    page.goto(f"{live_server.url}/usage/")

    expect(page.locator("h1")).to_have_text("Usage")
    expect(page.locator('[data-total="requests"]')).to_have_text("262")
    expect(page.locator(".alert-spike")).to_contain_text("CI runner")
    # One chart at a time; the tabs switch between requests, tokens and cost.
    expect(page.locator("#panel-requests")).to_be_visible()
    expect(page.locator("#panel-tokens")).to_be_hidden()
    spike_bar = page.locator("#panel-requests .usage-chart-wide rect.bar-spike")
    expect(spike_bar).to_have_count(1)
    # Drawn in the alarm colour of the legend, not the colour of an ordinary day.
    spike_fill = spike_bar.evaluate("el => getComputedStyle(el).fill")
    assert spike_fill == page.locator(".swatch-spike").evaluate("el => getComputedStyle(el).backgroundColor")
    assert spike_fill != page.locator("#panel-requests .usage-chart-wide rect.bar").first.evaluate(
        "el => getComputedStyle(el).fill"
    )
    page.screenshot(path=artifacts_dir / "usage.png", full_page=True)
    page.screenshot(path=artifacts_dir / "usage-top.png")

    page.get_by_role("tab", name="Cost").click()
    expect(page.locator("#panel-cost")).to_be_visible()
    expect(page.locator("#panel-requests")).to_be_hidden()
    page.locator(".usage-charts").screenshot(path=artifacts_dir / "usage-cost-chart.png")

    # Choosing a key swaps the body over HTMX and puts the filter in the address bar.
    page.get_by_label("API key").select_option(str(history.leaked.pk))
    expect(page.locator('[data-total="requests"]')).to_have_text("206")
    expect(page).to_have_url(f"{live_server.url}/usage/?key={history.leaked.pk}")
    expect(page.locator(".usage-scope")).to_contain_text("CI runner")
    # The tabs of the swapped-in chart work too.
    page.get_by_role("tab", name="Tokens").click()
    expect(page.locator("#panel-tokens")).to_be_visible()
    page.screenshot(path=artifacts_dir / "usage-filtered.png", full_page=True)

    # On a phone the tables and the chart scroll sideways inside their cards, not the page.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}/usage/")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=artifacts_dir / "usage-mobile.png", full_page=True)


def test_the_usage_page_without_usage_in_a_browser(live_server, page, artifacts_dir: Path, owner: User) -> None:
    from playwright.sync_api import expect

    sign_in(page, live_server, owner)
    page.goto(f"{live_server.url}/usage/")
    expect(page.get_by_role("heading", name="No usage yet")).to_be_visible()
    page.screenshot(path=artifacts_dir / "usage-empty.png", full_page=True)


def test_the_billing_page_in_a_browser(live_server, page, artifacts_dir: Path, owner: User) -> None:
    from playwright.sync_api import expect

    # A transactional test starts from an empty database: put back the catalogue the migration seeds.
    ServedModel.objects.get_or_create(
        name="dos-ai",
        defaults={"input_price_micros_per_million": 500_000, "output_price_micros_per_million": 1_500_000},
    )
    ServedModel.objects.get_or_create(
        name="dos-ai-embed",
        defaults={"kind": "embedding", "input_price_micros_per_million": 20_000, "output_price_micros_per_million": 0},
    )
    account_set_plan(user=owner, plan="plus")
    account_set_limits(user=owner, requests_per_minute=500, tokens_per_minute=1_000_000)
    credits_grant(user=owner, amount_micros=25_000_000, kind=LedgerEntry.Kind.TOPUP, note="Invoice 2026-0142")
    api_key = key_for(owner, "Production backend")
    now = dt.datetime.now(dt.UTC)
    for index in range(28):
        settle_usage(
            api_key, f"req_{index:04x}", prompt_tokens=800 + 37 * index, completion_tokens=300 + 11 * index, at=now
        )
    credits_grant(user=owner, amount_micros=12_345, kind=LedgerEntry.Kind.REFUND, note="Upstream timeout on req_0003")
    credits_grant(user=owner, amount_micros=-1_000_000, kind=LedgerEntry.Kind.ADJUSTMENT, note="Duplicate grant")
    credit_reserve(user_id=owner.pk, amount_micros=4_096, request_id="req_in_flight")

    sign_in(page, live_server, owner)
    page.goto(f"{live_server.url}/billing/")

    expect(page.locator("h1")).to_have_text("Billing")
    expect(page.locator(".limit-override")).to_contain_text("Custom limits")
    # 28 charges of one key today are one ledger line; the other entries stay one line each.
    rows = page.locator("#ledger-table tbody tr")
    expect(rows).to_have_count(5)
    expect(rows.nth(2)).to_contain_text("28 requests with Production backend")
    expect(page.locator("#ledger .pagination")).to_have_count(0)
    page.screenshot(path=artifacts_dir / "billing.png", full_page=True)
    page.screenshot(path=artifacts_dir / "billing-top.png")  # the first screen, at full resolution

    expect(rows.last).to_contain_text("Sign-up credit")
    # The line links to the usage page, where each request is.
    rows.nth(2).get_by_role("link").click()
    expect(page).to_have_url(f"{live_server.url}/usage/?key={api_key.pk}")


def test_an_administrator_grants_credit_from_the_admin(live_server, page, artifacts_dir: Path, owner: User) -> None:
    from playwright.sync_api import expect

    admin_user = User.objects.create_superuser("admin@example.com", "admin-password-1")
    sign_in(page, live_server, admin_user)
    page.goto(f"{live_server.url}/admin/billing/creditaccount/{owner.pk}/change/")
    expect(page.locator(".field-balance")).to_contain_text("$5.000000")

    page.get_by_role("link", name="Grant credits").click()
    page.get_by_label("Amount (USD)").fill("20")
    page.get_by_label("Kind").select_option("topup")
    page.get_by_label("Note").fill("Invoice 2026-0142")
    page.screenshot(path=artifacts_dir / "admin-grant.png", full_page=True)
    page.get_by_role("button", name="Record the ledger entry").click()

    expect(page.locator(".messagelist")).to_contain_text(
        "Top-up of $20.000000 recorded for owner@example.com. New balance: $25.000000."
    )
    expect(page.locator(".field-balance")).to_contain_text("$25.000000")
    entry = LedgerEntry.objects.filter(user=owner).first()
    assert (entry.kind, entry.amount_micros, entry.note, entry.created_by) == (
        "topup",
        20_000_000,
        "Invoice 2026-0142",
        admin_user,
    )
