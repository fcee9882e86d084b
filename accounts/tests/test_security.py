"""/settings/security/: the security log (entries, IPs, actors, append-only), sessions, the admin's 2FA rule,
and the gates on key creation (verified email, recent sign-in)."""

from __future__ import annotations

import re
import time

import pytest
from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from django.core.management import call_command
from django.test import Client

from accounts.models import SecurityEvent, User
from apikeys.models import ApiKey
from billing.models import LedgerEntry
from dosportal.clientip import parse_trusted_proxies

pytestmark = pytest.mark.django_db


def kinds(user: User) -> list[str]:
    return list(SecurityEvent.objects.filter(user=user).order_by("id").values_list("kind", flat=True))


def test_a_sign_in_is_logged_with_ip_and_browser(client: Client, owner: User, password: str) -> None:
    client.post(
        "/login/",
        {"login": owner.email, "password": password},
        REMOTE_ADDR="203.0.113.5",
        HTTP_USER_AGENT="Firefox/140",
    )

    event = SecurityEvent.objects.get(user=owner)
    assert (event.kind, event.ip_address, event.user_agent, event.actor_label) == (
        "signed_in",
        "203.0.113.5",
        "Firefox/140",
        "You",
    )


def test_a_failed_sign_in_is_logged_as_someone(client: Client, owner: User) -> None:
    client.post("/login/", {"login": owner.email, "password": "wrong"}, REMOTE_ADDR="198.51.100.8")

    event = SecurityEvent.objects.get(user=owner)
    assert (event.kind, event.ip_address, event.actor_label) == ("sign_in_failed", "198.51.100.8", "Someone")


def test_x_forwarded_for_counts_only_from_a_trusted_proxy(client: Client, owner: User, password: str, settings) -> None:
    form = {"login": owner.email, "password": password}
    client.post("/login/", form, REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.77")
    settings.DOS_AI_TRUSTED_PROXIES = parse_trusted_proxies(["10.0.0.0/8"])
    Client().post("/login/", form, REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.77")

    ips = list(SecurityEvent.objects.filter(user=owner).order_by("id").values_list("ip_address", flat=True))
    assert ips == ["10.0.0.2", "198.51.100.77"]


def test_key_created_and_revoked_are_logged_without_the_raw_key(client_for, owner: User) -> None:
    client = client_for(owner)
    response = client.post("/keys/create/", {"name": "Prod"}, REMOTE_ADDR="203.0.113.9")
    raw_key = response.context["raw_key"]
    api_key = ApiKey.objects.get(owner=owner)
    client.post(f"/keys/{api_key.pk}/revoke/")

    events = SecurityEvent.objects.filter(user=owner).order_by("id")
    assert [(e.kind, e.detail, e.actor_label) for e in events] == [
        ("key_created", f"Prod ({api_key.hint})", "You"),
        ("key_revoked", f"Prod ({api_key.hint})", "You"),
    ]
    assert events[0].ip_address == "203.0.113.9"
    page = client.get("/settings/security/").content.decode()
    assert "API key created" in page
    assert raw_key not in page
    assert not SecurityEvent.objects.filter(detail__contains=raw_key).exists()


def test_operator_changes_are_by_an_administrator(owner: User) -> None:
    call_command("grant_credits", owner.email, "2.50")
    call_command("set_limits", owner.email, "--rpm", "5", "--tpm", "500")
    call_command("set_plan", owner.email, "pro")

    events = SecurityEvent.objects.filter(user=owner).order_by("id")
    assert [(e.kind, e.actor_label) for e in events] == [
        ("credit_granted", "An administrator"),
        ("limits_changed", "An administrator"),
        ("plan_changed", "An administrator"),
    ]
    assert events[0].detail == "Grant $2.50"
    assert events[1].detail == "5 requests and 500 tokens per minute"


def test_the_log_is_append_only(owner: User) -> None:
    call_command("set_plan", owner.email, "pro")
    event = SecurityEvent.objects.get(user=owner)

    with pytest.raises(TypeError):
        event.save()
    with pytest.raises(TypeError):
        SecurityEvent.objects.filter(pk=event.pk).update(detail="edited")


def test_the_log_is_paginated_and_shows_only_ones_own_events(client_for, owner: User, outsider: User, settings) -> None:
    settings.DOS_AI_SECURITY_LOG_PAGE_SIZE = 3
    for plan in ["pro", "plus", "free", "pro"]:
        call_command("set_plan", owner.email, plan)
    call_command("set_plan", outsider.email, "pro")

    first = client_for(owner).get("/settings/security/")
    second = client_for(owner).get("/settings/security/?page=2")

    assert first.status_code == 200
    assert [e.detail for e in first.context["events"]] == ["free → pro", "plus → free", "pro → plus"]
    assert [e.detail for e in second.context["events"]] == ["free → pro"]
    assert b"Page 1 of 2" in first.content
    assert all(e.user == owner for e in first.context["events"])


def test_the_admin_lists_the_log_with_filters_and_cannot_change_it(admin_client, owner: User) -> None:
    call_command("set_plan", owner.email, "pro")
    event = SecurityEvent.objects.get(user=owner)

    listing = admin_client.get("/admin/accounts/securityevent/?kind=plan_changed")
    change = admin_client.post(f"/admin/accounts/securityevent/{event.pk}/change/", {"detail": "x"})
    delete = admin_client.get(f"/admin/accounts/securityevent/{event.pk}/delete/")

    assert listing.status_code == 200
    assert b"free \xe2\x86\x92 pro" in listing.content
    assert change.status_code == 403
    assert delete.status_code == 403


def test_an_unverified_account_cannot_create_a_key(client_for, owner: User) -> None:
    EmailAddress.objects.filter(user=owner).update(verified=False)

    response = client_for(owner).post("/keys/create/", {"name": "Prod"})

    assert response.status_code == 200
    assert response.context["form"].errors == {
        "name": ["Confirm your email address before creating a key: use the link we sent you."]
    }
    assert not ApiKey.objects.exists()
    overview = client_for(owner).get("/")
    assert b"Confirm your email address to receive your starting credit" in overview.content


def test_creating_a_key_asks_to_confirm_its_you_after_five_minutes(client_for, owner: User, password: str) -> None:
    client = client_for(owner)
    session = client.session
    session["account_authentication_methods"] = [{"method": "password", "at": time.time() - 301}]
    session.save()

    response = client.post("/keys/create/", {"name": "Prod"})
    assert response.status_code == 302
    assert response["Location"] == "/accounts/reauthenticate/?next=%2Fkeys%2F"
    assert not ApiKey.objects.exists()

    confirmed = client.post("/accounts/reauthenticate/?next=/keys/", {"password": password, "next": "/keys/"})
    assert confirmed.status_code == 302
    assert confirmed["Location"] == "/keys/"
    assert client.post("/keys/create/", {"name": "Prod"}).status_code == 200
    assert ApiKey.objects.filter(owner=owner).count() == 1


def test_htmx_gets_a_client_redirect_to_confirm(client_for, owner: User) -> None:
    client = client_for(owner)
    session = client.session
    session["account_authentication_methods"] = []
    session.save()

    response = client.post("/keys/create/", {"name": "Prod"}, HTTP_HX_REQUEST="true")

    assert response["HX-Redirect"] == "/accounts/reauthenticate/?next=%2Fkeys%2F"


def test_sessions_are_listed_and_one_can_be_signed_out(owner: User, password: str) -> None:
    laptop, phone = Client(HTTP_USER_AGENT="Laptop"), Client(HTTP_USER_AGENT="Phone")
    laptop.post("/login/", {"login": owner.email, "password": password})
    phone.post("/login/", {"login": owner.email, "password": password})

    page = laptop.get("/settings/security/")
    sessions = page.context["sessions"]
    assert sorted(s.user_agent for s in sessions) == ["Laptop", "Phone"]
    phone_session = next(s for s in sessions if s.user_agent == "Phone")

    response = laptop.post(f"/settings/security/sessions/{phone_session.pk}/end/")

    assert response.status_code == 302
    assert phone.get("/").status_code == 302  # signed out
    assert laptop.get("/").status_code == 200
    assert kinds(owner)[-1] == "sessions_ended"


def test_another_users_session_is_a_404(client_for, owner: User, outsider: User, password: str) -> None:
    other = Client()
    other.post("/login/", {"login": outsider.email, "password": password})
    from allauth.usersessions.models import UserSession

    session = UserSession.objects.get(user=outsider)

    response = client_for(owner).post(f"/settings/security/sessions/{session.pk}/end/")

    assert response.status_code == 404
    assert other.get("/").status_code == 200


def test_staff_without_two_factor_are_refused_by_the_admin(client_for, superuser: User, settings) -> None:
    settings.DOS_AI_REQUIRE_2FA_FOR_STAFF = True
    client = client_for(superuser)

    response = client.get("/admin/", follow=True)

    assert response.redirect_chain == [("/admin/login/?next=/admin/", 302), ("/settings/security/", 302)]
    assert b"Turn on two-factor authentication to use the admin." in response.content

    Authenticator.objects.create(user=superuser, type=Authenticator.Type.TOTP, data={"secret": "x"})
    assert client.get("/admin/").status_code == 200


def test_the_admin_signs_in_through_the_portal(client: Client) -> None:
    response = client.get("/admin/login/?next=/admin/")

    assert response.status_code == 302
    assert response["Location"] == "/login/?next=%2Fadmin%2F"


def test_changes_in_the_admin_are_logged_as_by_an_administrator(admin_client, owner: User) -> None:
    form = {
        "email": "renamed@example.com",
        "plan": "pro",
        "requests_per_minute_override": "7",
        "tokens_per_minute_override": "700",
        "is_active": "on",
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
    }
    response = admin_client.post(f"/admin/accounts/user/{owner.pk}/change/", form)

    assert response.status_code == 302
    events = SecurityEvent.objects.filter(user=owner).order_by("id")
    assert [(e.kind, e.detail, e.actor_label, e.actor.email) for e in events] == [
        ("email_changed", "now renamed@example.com", "An administrator", "admin@example.com"),
        ("plan_changed", "free → pro", "An administrator", "admin@example.com"),
        ("limits_changed", "7 requests and 700 tokens per minute", "An administrator", "admin@example.com"),
    ]
    # An operator's change of email counts as verified: the account keeps working.
    addresses = EmailAddress.objects.filter(user=owner).order_by("email")
    assert list(addresses.values_list("email", "verified", "primary")) == [
        ("owner@example.com", True, False),
        ("renamed@example.com", True, True),
    ]


@pytest.mark.parametrize(
    "url", ["/accounts/email/", "/accounts/2fa/totp/activate/", "/accounts/2fa/webauthn/", "/accounts/password/change/"]
)
def test_allauths_pages_open_in_our_layout(client_for, owner: User, url: str) -> None:
    client = client_for(owner)
    session = client.session
    session["account_authentication_methods"][0]["reauthenticated"] = True
    session.save()

    response = client.get(url)

    assert response.status_code == 200
    assert b'<nav class="mainnav" aria-label="Main">' in response.content
    assert b"<script>" not in response.content  # no inline script (CSP)


def test_the_migration_marks_existing_accounts_verified(owner: User) -> None:
    import importlib

    from django.apps import apps

    EmailAddress.objects.filter(user=owner).delete()
    migration = importlib.import_module("accounts.migrations.0003_existing_emails_verified")

    migration.mark_verified(apps, None)
    migration.mark_verified(apps, None)  # running it twice adds nothing

    assert list(EmailAddress.objects.filter(user=owner).values_list("email", "verified", "primary")) == [
        (owner.email, True, True)
    ]


def reauthenticated(client: Client) -> Client:
    session = client.session
    session["account_authentication_methods"][0]["reauthenticated"] = True
    session.save()
    return client


def test_changing_email_asks_to_confirm_its_you_first(client_for, owner: User, mailoutbox) -> None:
    response = client_for(owner).post("/accounts/email/", {"action_add": "", "email": "new@example.com"})

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/reauthenticate/")
    assert not EmailAddress.objects.filter(email="new@example.com").exists()


def test_a_changed_email_counts_only_once_confirmed_and_grants_no_second_credit(
    client_for, owner: User, mailoutbox
) -> None:
    client = reauthenticated(client_for(owner))
    client.post("/accounts/email/", {"action_add": "", "email": "new@example.com"})
    body = next(m for m in mailoutbox if m.to == ["new@example.com"]).body
    path = re.search(r"http://testserver(/accounts/confirm-email/[^/\s]+/)", body).group(1)

    client.post(path)

    owner.refresh_from_db()
    assert owner.email == "new@example.com"
    assert "email_changed" in kinds(owner)
    assert LedgerEntry.objects.filter(user=owner).count() == 1


def test_turning_two_factor_off_is_logged_and_mailed(client_for, owner: User, mailoutbox) -> None:
    from allauth.mfa.totp.internal.auth import TOTP

    TOTP.activate(owner, "JBSWY3DPEHPK3PXP")
    client = reauthenticated(client_for(owner))

    response = client.post("/accounts/2fa/totp/deactivate/")

    assert response.status_code == 302
    assert not Authenticator.objects.filter(user=owner, type=Authenticator.Type.TOTP).exists()
    assert kinds(owner)[-1] == "2fa_disabled"
    assert [m.subject for m in mailoutbox] == ["DOS AI: Authenticator App Deactivated"]


CHROME_LINUX = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)
FIREFOX_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"


def test_sessions_and_the_log_name_browsers_as_people_do(owner: User, password: str) -> None:
    import html as html_lib

    clients = [Client(HTTP_USER_AGENT=agent) for agent in (CHROME_LINUX, SAFARI_IPHONE, FIREFOX_WINDOWS)]
    for client in clients:
        client.post("/login/", {"login": owner.email, "password": password})
    Client(HTTP_USER_AGENT="curl/8.5.0").post("/login/", {"login": owner.email, "password": "wrong"})

    page = clients[0].get("/settings/security/").content.decode()

    shown = re.findall(r'<strong class="session-browser" title="([^"]+)">([^<]+)</strong>', page)
    assert sorted((html_lib.unescape(raw), name) for raw, name in shown) == sorted(
        [
            (CHROME_LINUX, "Chrome on Linux"),
            (SAFARI_IPHONE, "Mobile Safari on iOS"),
            (FIREFOX_WINDOWS, "Firefox on Windows"),
        ]
    )
    log_browsers = re.findall(r'<td class="faint" data-label="Browser"[^>]*>([^<]+)</td>', page)
    assert log_browsers == ["curl", "Firefox on Windows", "Mobile Safari on iOS", "Chrome on Linux"]
    assert "Mozilla/5.0 (X11" not in re.sub(r'title="[^"]*"', "", page)  # the raw string only on hover


@pytest.mark.parametrize(
    ("user_agent", "name"),
    [("", "Unknown browser"), ("python-httpx/0.28.1", "python-httpx"), ("Laptop", "Laptop")],
)
def test_a_client_the_rules_do_not_know_is_named_by_its_first_word(user_agent: str, name: str) -> None:
    from accounts.useragents import browser_name

    assert browser_name(user_agent) == name


def test_the_logs_what_is_one_text_so_a_phone_does_not_split_it_into_columns(client_for, owner: User) -> None:
    from accounts.security import SecurityContext, security_event_record

    security_event_record(
        user=owner,
        kind=SecurityEvent.Kind.KEY_CREATED,
        context=SecurityContext(actor=owner),
        detail="Phone (dos_sk_9re1…uPgM)",
    )

    html = client_for(owner).get("/settings/security/").content.decode()

    # The stacked cell is a flex row: label, then exactly one item (kind and detail together).
    assert (
        '<td data-label="What"><span class="log-what">API key created '
        '<span class="muted">Phone (dos_sk_9re1…uPgM)</span></span></td>'
    ) in html
