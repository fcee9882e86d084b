"""In chromium: a confirmed user creates a key, turns on TOTP (the secret read from the page, codes
computed here), and signs in again with a code and with a recovery code. Screenshots at 1280 and 390 px."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value

from accounts.models import SecurityEvent, User

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

EMAIL = "grace@example.com"
PASSWORD = "violet-harbour-lantern-93"


def totp_code(secret: str, *, fresh_after: float = 0.0) -> str:
    """The current code; waits for the next 30 s period if the current one was already used."""
    if fresh_after and int(time.time() // 30) == int(fresh_after // 30):
        time.sleep(30 - time.time() % 30 + 0.5)
    return format_hotp_value(hotp_value(secret, int(time.time() // 30)))


def sign_in(page, live_server, password: str = PASSWORD) -> None:
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def shoot(page, artifacts_dir: Path, name: str) -> None:
    page.screenshot(path=artifacts_dir / f"{name}.png", full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, name
    page.screenshot(path=artifacts_dir / f"{name}-mobile.png", full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def test_key_then_two_factor_then_sign_in_with_a_code_and_a_recovery_code(
    live_server, page, artifacts_dir: Path, settings
) -> None:
    from playwright.sync_api import expect

    User.objects.create_user(EMAIL, PASSWORD)
    page.set_viewport_size({"width": 1280, "height": 900})
    sign_in(page, live_server)
    expect(page).to_have_url(f"{live_server.url}/")

    # A key, right after signing in (a recent sign-in counts as confirmation).
    page.goto(f"{live_server.url}/keys/")
    page.get_by_label("Key name").fill("Laptop")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator(".key-value").first).to_contain_text("dos_sk_")

    # Two-factor: allauth asks for the password first, then shows the QR code and the secret.
    page.goto(f"{live_server.url}/settings/security/")
    shoot(page, artifacts_dir, "security")
    page.get_by_role("link", name="Turn on two-factor").click()
    if "/reauthenticate/" in page.url:
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Confirm").click()
    expect(page.locator("h1")).to_have_text("Turn on two-factor")
    assert page.locator(".totp-qr svg").count() == 1  # rendered here, no image service
    shoot(page, artifacts_dir, "totp-activate")
    secret = page.locator("#authenticator_secret").input_value()
    # The key by hand is whole on a phone (it wraps, nothing hidden), and it has a copy button.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.locator("#authenticator_secret").evaluate("el => el.scrollWidth <= el.clientWidth")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_role("button", name="Copy key").click()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    page.get_by_label("Authenticator code").fill(totp_code(secret))
    activated_at = time.time()
    page.get_by_role("button", name="Turn on").click()
    codes = page.locator("#recovery_codes").input_value().split()
    assert len(codes) == 10
    expect(page.locator("h1")).to_have_text("Recovery codes")
    expect(page.get_by_text("Each code works once")).to_be_visible()
    page.get_by_role("button", name="Copy codes").click()
    assert page.evaluate("navigator.clipboard.readText()").split() == codes
    expect(page.get_by_role("link", name="Download codes")).to_be_visible()
    shoot(page, artifacts_dir, "recovery-codes")

    # Sign in again: password, then a fresh code.
    page.context.clear_cookies()
    sign_in(page, live_server)
    expect(page.locator("h1")).to_have_text("Two-factor authentication")
    shoot(page, artifacts_dir, "mfa-authenticate")
    page.get_by_label("Code").fill(totp_code(secret, fresh_after=activated_at))
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page).to_have_url(f"{live_server.url}/")

    # And with a recovery code, which works once.
    page.context.clear_cookies()
    sign_in(page, live_server)
    page.get_by_label("Code").fill(codes[0])
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page).to_have_url(f"{live_server.url}/")

    # Minutes later, a new key first asks to confirm it's you, then comes back to the keys page.
    settings.ACCOUNT_REAUTHENTICATION_TIMEOUT = 1
    time.sleep(1.1)
    page.goto(f"{live_server.url}/keys/")
    page.get_by_label("Key name").fill("Phone")
    page.get_by_role("button", name="Create key").click()
    expect(page).to_have_url(re.compile(r"/accounts/reauthenticate/\?next=%2Fkeys%2F$"))
    shoot(page, artifacts_dir, "reauthenticate")
    settings.ACCOUNT_REAUTHENTICATION_TIMEOUT = 300
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Confirm").click()
    expect(page).to_have_url(f"{live_server.url}/keys/")
    page.get_by_label("Key name").fill("Phone")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator(".key-reveal")).to_contain_text("Phone")

    user = User.objects.get(email=EMAIL)
    logged = list(SecurityEvent.objects.filter(user=user).order_by("id").values_list("kind", flat=True))
    assert logged == ["signed_in", "key_created", "2fa_enabled", "signed_in", "signed_in", "key_created"]
    page.goto(f"{live_server.url}/settings/security/")
    expect(page.locator(".security-log")).to_contain_text("Two-factor turned on")
    shoot(page, artifacts_dir, "security-after")


def test_a_security_key_is_added_and_signs_in(live_server, page, artifacts_dir: Path) -> None:
    """WebAuthn with chromium's virtual authenticator (DevTools protocol): allauth's own JS, from static/."""
    from playwright.sync_api import expect

    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "usb",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    User.objects.create_user(EMAIL, PASSWORD)
    page.set_viewport_size({"width": 1280, "height": 900})
    sign_in(page, live_server)
    expect(page).to_have_url(f"{live_server.url}/")

    page.goto(f"{live_server.url}/accounts/2fa/webauthn/add/")
    if "/reauthenticate/" in page.url:
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Confirm").click()
    expect(page.locator("h1")).to_have_text("Add Security Key")
    shoot(page, artifacts_dir, "webauthn-add")
    page.get_by_label("Name").fill("Test key")
    page.get_by_role("button", name="Add").click()
    expect(page.locator("#recovery_codes")).to_be_visible()  # the first second factor brings recovery codes

    page.context.clear_cookies()
    sign_in(page, live_server)
    expect(page.locator("h1")).to_have_text("Two-factor authentication")
    page.get_by_role("button", name="Use a security key").click()
    expect(page).to_have_url(f"{live_server.url}/")

    user = User.objects.get(email=EMAIL)
    logged = list(SecurityEvent.objects.filter(user=user).order_by("id").values_list("kind", flat=True))
    assert logged == ["signed_in", "passkey_added", "signed_in"]


def test_a_forgotten_password_is_reset_from_the_emailed_link(
    live_server, page, artifacts_dir: Path, mailoutbox
) -> None:
    from playwright.sync_api import expect

    User.objects.create_user(EMAIL, PASSWORD)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{live_server.url}/login/")
    page.get_by_role("link", name="Forgot password?").click()
    shoot(page, artifacts_dir, "password-reset")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_role("button", name="Send the reset link").click()
    expect(page).to_have_url(f"{live_server.url}/accounts/password/reset/done/")
    shoot(page, artifacts_dir, "password-reset-done")

    page.goto(re.search(r"https?://\S+/accounts/password/reset/key/\S+/", mailoutbox[-1].body).group(0))
    shoot(page, artifacts_dir, "password-reset-from-key")
    page.get_by_label("New Password", exact=True).fill("marble-orchard-compass-71")
    page.get_by_label("New Password (again)").fill("marble-orchard-compass-71")
    page.get_by_role("button", name="Change Password").click()
    expect(page).to_have_url(f"{live_server.url}/accounts/password/reset/key/done/")

    sign_in(page, live_server, "marble-orchard-compass-71")
    expect(page).to_have_url(f"{live_server.url}/")
