"""The pages of issue 24 in Debian's chromium at 1280 and 390 px, with screenshots in
test-artifacts/ for a human to look at: the webhooks settings, an endpoint's log, the public
report form and the keys list with a key revoked as leaked."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from accounts.models import User
from apikeys.models import ApiKey
from apikeys.services import api_key_create, api_key_revoke
from webhooks.delivery import deliver_due
from webhooks.models import Delivery, Endpoint
from webhooks.services import webhook_test_send

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}


def sign_in(page, live_server, user: User) -> None:
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    page.context.add_cookies([{"name": cookie.key, "value": cookie.value, "url": live_server.url}])


def fits_a_phone(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_adding_an_endpoint_and_reading_its_log(
    live_server, page, artifacts_dir: Path, owner: User, receiver, allow_private
) -> None:
    from playwright.sync_api import expect

    sign_in(page, live_server, owner)
    page.goto(f"{live_server.url}/settings/")
    page.get_by_role("link", name="Webhooks").click()
    expect(page.locator("h1")).to_have_text("Webhooks")
    page.screenshot(path=artifacts_dir / "webhooks-empty.png", full_page=True)

    page.get_by_label("Endpoint URL").fill(receiver.url)
    page.get_by_label("Description").fill("Ops alerts")
    page.get_by_label("The available credit fell below the alert threshold").uncheck()
    page.get_by_role("button", name="Add endpoint").click()

    endpoint = Endpoint.objects.get(owner=owner)
    expect(page.locator("#secret-value")).to_have_text(endpoint.secret)
    assert "balance.low" not in endpoint.event_types
    page.screenshot(path=artifacts_dir / "webhooks-secret.png", full_page=True)

    # Some history for the log: a delivered key event, a failing test event waiting to retry.
    api_key_create(owner=owner, name="Production backend")
    deliver_due()
    receiver.statuses = [500]
    webhook_test_send(endpoint=endpoint)
    deliver_due()
    page.get_by_role("link", name=receiver.url).click()
    expect(page.locator(".delivery-log tbody tr")).to_have_count(2)
    expect(page.locator(".delivery-log tbody tr").first).to_contain_text("HTTP 500")
    page.screenshot(path=artifacts_dir / "webhook-endpoint.png", full_page=True)

    page.get_by_role("button", name="Send a test event").click()
    expect(page.locator(".flash-success")).to_contain_text("Test event queued")
    assert Delivery.objects.filter(event_type="webhook.test").count() == 2

    page.set_viewport_size(PHONE)
    page.reload()
    assert fits_a_phone(page)
    page.screenshot(path=artifacts_dir / "webhook-endpoint-mobile.png", full_page=True)
    page.goto(f"{live_server.url}/settings/webhooks/")
    assert fits_a_phone(page)
    page.screenshot(path=artifacts_dir / "webhooks-mobile.png", full_page=True)


def test_reporting_a_key_and_seeing_it_revoked_as_leaked(
    live_server, page, artifacts_dir: Path, owner: User, mailoutbox
) -> None:
    from playwright.sync_api import expect

    _, raw_key = api_key_create(owner=owner, name="Laptop")
    page.goto(f"{live_server.url}/report-leaked-key/")
    expect(page.locator("h1")).to_have_text("Report a leaked API key")
    page.screenshot(path=artifacts_dir / "report-leaked-key.png", full_page=True)
    page.get_by_label("The key").fill(f"export OPENAI_API_KEY={raw_key}")
    page.get_by_label("Where you found it").fill(
        "https://gist.github.com/someone/0123456789abcdef0123456789abcdef/raw/settings.env"
    )
    page.get_by_role("button", name="Report the key").click()
    expect(page.locator(".flash-success")).to_contain_text("Thank you.")
    page.screenshot(path=artifacts_dir / "report-leaked-key-sent.png", full_page=True)
    page.set_viewport_size(PHONE)
    page.goto(f"{live_server.url}/report-leaked-key/")
    assert fits_a_phone(page)
    page.screenshot(path=artifacts_dir / "report-leaked-key-mobile.png", full_page=True)

    revoked_by_hand, _ = api_key_create(owner=owner, name="Old CI")
    api_key_revoke(api_key=revoked_by_hand)
    page.set_viewport_size({"width": 1280, "height": 900})
    sign_in(page, live_server, owner)
    page.goto(f"{live_server.url}/keys/?status=revoked")
    expect(page.locator(".key-leaked")).to_have_text(
        "revoked automatically: found at "
        "https://gist.github.com/someone/0123456789abcdef0123456789abcdef/raw/settings.env"
    )
    page.screenshot(path=artifacts_dir / "keys-revoked-leaked.png", full_page=True)
    page.set_viewport_size(PHONE)
    page.reload()
    assert fits_a_phone(page)
    page.screenshot(path=artifacts_dir / "keys-revoked-leaked-mobile.png", full_page=True)

    # A key suspended for unusual spend: its badge and the Resume button, which works.
    suspended, _ = api_key_create(owner=owner, name="Nightly batch")
    ApiKey.objects.filter(pk=suspended.pk).update(
        suspended_at=timezone.now(), suspended_reason="unusual spend: $12.40 and 800 requests in the last hour"
    )
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{live_server.url}/keys/")
    expect(page.locator(f"#key-{suspended.pk} .badge-danger")).to_have_text("suspended: unusual spend")
    page.screenshot(path=artifacts_dir / "keys-suspended.png", full_page=True)
    page.set_viewport_size(PHONE)
    page.reload()
    assert fits_a_phone(page)
    page.screenshot(path=artifacts_dir / "keys-suspended-mobile.png", full_page=True)
    page.get_by_role("button", name="Resume Nightly batch").click()
    expect(page.locator(".flash-success")).to_contain_text("Resumed “Nightly batch”")
    suspended.refresh_from_db()
    assert suspended.suspended_at is None
