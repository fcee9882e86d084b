"""A new user signs up in Debian's chromium, confirms the emailed link, and lands on the overview."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from accounts.models import User
from billing.models import LedgerEntry

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

EMAIL = "ada@example.com"
PASSWORD = "violet-harbour-lantern-93"


def test_a_new_user_signs_up_in_the_browser_and_lands_on_the_overview(
    live_server, page, artifacts_dir: Path, mailoutbox
) -> None:
    from playwright.sync_api import expect

    page.goto(f"{live_server.url}/login/")
    expect(page.locator("h1")).to_have_text("Sign in")
    # The stylesheet and the fonts are served from static/ (under live_server DEBUG is off).
    assert page.locator(".auth-shell").evaluate("el => getComputedStyle(el).borderTopLeftRadius") == "16px"
    assert page.evaluate("document.fonts.ready.then(() => document.fonts.check('16px \"Inter Variable\"'))")
    assert page.evaluate("[...document.fonts].some(f => f.family.includes('Inter') && f.status === 'loaded')")
    page.screenshot(path=artifacts_dir / "login.png", full_page=True)

    page.get_by_role("link", name="Create an account").click()
    expect(page).to_have_url(f"{live_server.url}/signup/")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.screenshot(path=artifacts_dir / "signup.png", full_page=True)
    page.get_by_role("button", name="Create account").click()

    expect(page.locator("h1")).to_have_text("Check your inbox")
    assert not LedgerEntry.objects.filter(user__email=EMAIL).exists()  # no credit before confirming
    page.screenshot(path=artifacts_dir / "check-inbox.png", full_page=True)
    link = re.search(r"https?://\S+/accounts/confirm-email/\S+/", mailoutbox[-1].body).group(0)
    page.goto(link)
    page.get_by_role("button", name="Confirm").click()

    expect(page).to_have_url(f"{live_server.url}/")
    expect(page.locator("h1")).to_have_text("Overview")
    expect(page.locator(".account-email")).to_have_text(EMAIL)
    expect(page.get_by_role("status")).to_contain_text("Welcome to DOS AI")
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Overview")).to_have_attribute(
        "aria-current", "page"
    )
    expect(page.locator("#qs-python")).to_contain_text(f'base_url="{live_server.url}/v1"')
    user = User.objects.get(email=EMAIL)
    assert list(LedgerEntry.objects.filter(user=user).values_list("kind", "amount_micros")) == [("grant", 5_000_000)]
    page.screenshot(path=artifacts_dir / "overview.png", full_page=True)

    page.get_by_role("button", name="Dismiss").click()
    expect(page.locator(".flash")).to_have_count(0)

    # The quickstart tabs: click, and arrow keys move between them.
    python_tab = page.get_by_role("tab", name="Python")
    javascript_tab = page.get_by_role("tab", name="JavaScript")
    curl_tab = page.get_by_role("tab", name="curl")
    expect(page.locator("#qs-js")).to_be_hidden()
    javascript_tab.click()
    expect(javascript_tab).to_have_attribute("aria-selected", "true")
    expect(page.locator("#qs-js")).to_be_visible()
    expect(page.locator("#qs-python")).to_be_hidden()
    page.keyboard.press("ArrowRight")
    expect(curl_tab).to_be_focused()
    expect(page.locator("#qs-curl")).to_be_visible()
    expect(page.locator("#qs-curl")).to_contain_text(f"curl {live_server.url}/v1/chat/completions")
    page.keyboard.press("ArrowRight")
    expect(python_tab).to_be_focused()
    expect(python_tab).to_have_attribute("aria-selected", "true")
    page.keyboard.press("End")
    expect(curl_tab).to_be_focused()
    expect(page.locator("#qs-curl")).to_be_visible()
    page.keyboard.press("Home")
    expect(python_tab).to_be_focused()
    expect(page.locator("#qs-python")).to_be_visible()

    # The copy button copies the example on show, exactly as the page has it.
    javascript_tab.click()
    page.get_by_role("button", name="Copy the example").click()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == page.locator("#qs-js-code").text_content()
    assert copied.startswith('import OpenAI from "openai";')
    assert f'baseURL: "{live_server.url}/v1"' in copied

    # On a phone the layout fits the screen: no sideways scrolling of the page.
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=artifacts_dir / "overview-mobile.png", full_page=True)

    # Signing out is a POST from the top bar; it lands on the sign-in page.
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login/$"))
