"""Alerts: sent once per crossing through a real SMTP server on 127.0.0.1 (aiosmtpd) and
Django's test outbox; re-armed when the credit is back; weekly summaries opt-in, once a week;
a failed send is retried, never lost, never doubled. And the settings card on /settings/."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterator
from email import message_from_bytes
from io import StringIO

import pytest
from django.core import mail
from django.core.management import CommandError, call_command
from django.test import Client

from accounts.models import User
from apikeys.models import ApiKey
from billing.alerts import alerts_send
from billing.models import AlertSettings, AlertState, LedgerEntry
from billing.services import credit_reserve, credits_grant
from billing.tests.conftest import add_usage
from dosportal.testing.keys import key_for

NOTHING_SENT = "Low-balance alerts sent: 0, re-armed: 0; key spend alerts sent: 0; weekly summaries sent: 0.\n"

pytestmark = pytest.mark.django_db


class Inbox:
    """aiosmtpd handler: keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp(settings) -> Iterator[Inbox]:
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
    settings.EMAIL_USE_TLS, settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD = False, "", ""
    settings.DOS_AI_SITE_URL = "https://app.example.com"
    yield inbox
    controller.stop()


def run_alerts() -> str:
    out = StringIO()
    call_command("send_alerts", stdout=out)
    return out.getvalue()


def set_balance(user: User, micros: int) -> None:
    """Through the ledger, like an administrator would (the sign-up credit is $5.00)."""
    from billing.selectors import credit_account_for

    change = micros - credit_account_for(user=user).balance_micros
    if change:
        credits_grant(user=user, amount_micros=change, kind=LedgerEntry.Kind.ADJUSTMENT, note="test")


def body(message) -> str:
    return message.get_payload(decode=True).decode().replace("\r\n", "\n")


# --- Low balance ---------------------------------------------------------------------


def test_falling_below_the_threshold_sends_one_email_through_smtp_and_the_next_runs_none(
    smtp: Inbox, owner: User, outsider: User
) -> None:
    set_balance(owner, 950_000)

    first = run_alerts()
    second = run_alerts()
    third = run_alerts()

    assert first == "Low-balance alerts sent: 1, re-armed: 0; key spend alerts sent: 0; weekly summaries sent: 0.\n"
    assert (
        second
        == third
        == "Low-balance alerts sent: 0, re-armed: 0; key spend alerts sent: 0; weekly summaries sent: 0.\n"
    )
    (message,) = smtp.messages
    assert message["To"] == "owner@example.com"
    assert message["From"] == "DOS AI <noreply@localhost>"
    assert message["Subject"] == "DOS AI: your available credit is below $1.00"
    text = body(message)
    assert "the available credit of your DOS AI account owner@example.com is $0.950000," in text
    assert "To add credit, see Billing in your dashboard: https://app.example.com/billing/." in text
    # The outsider still has $5.00: nothing for them.
    assert AlertState.objects.get().user == owner


def test_credit_held_by_requests_in_flight_counts_as_spent(smtp: Inbox, owner: User) -> None:
    set_balance(owner, 1_200_000)
    credit_reserve(user_id=owner.pk, amount_micros=300_000, request_id="req_in_flight")

    run_alerts()

    assert "is $0.900000," in body(smtp.messages[0])


def test_the_alert_is_rearmed_once_the_credit_is_back_and_sent_again_on_the_next_crossing(
    smtp: Inbox, owner: User
) -> None:
    set_balance(owner, 500_000)
    run_alerts()
    set_balance(owner, 20_000_000)  # topped up

    assert (
        run_alerts() == "Low-balance alerts sent: 0, re-armed: 1; key spend alerts sent: 0; weekly summaries sent: 0.\n"
    )
    assert not AlertState.objects.exists()
    set_balance(owner, 400_000)
    run_alerts()
    run_alerts()

    assert [body(message).split("\n")[2] for message in smtp.messages] == [
        "the available credit of your DOS AI account owner@example.com is $0.500000,",
        "the available credit of your DOS AI account owner@example.com is $0.400000,",
    ]


def test_hovering_just_above_the_threshold_does_not_rearm_it(smtp: Inbox, owner: User) -> None:
    set_balance(owner, 990_000)
    run_alerts()
    set_balance(owner, 1_050_000)  # above $1.00, below $1.10
    run_alerts()
    set_balance(owner, 980_000)
    run_alerts()

    assert len(smtp.messages) == 1


def test_the_accounts_own_threshold_and_switch_are_respected(smtp: Inbox, owner: User, outsider: User) -> None:
    AlertSettings.objects.create(user=owner, low_balance_threshold_micros=10_000_000)
    AlertSettings.objects.create(user=outsider, low_balance_enabled=False)
    set_balance(outsider, 0)

    run_alerts()

    (message,) = smtp.messages
    assert message["To"] == "owner@example.com"
    assert message["Subject"] == "DOS AI: your available credit is below $10.00"


def test_turning_the_alert_off_rearms_it(smtp: Inbox, owner: User) -> None:
    set_balance(owner, 500_000)
    run_alerts()
    AlertSettings.objects.create(user=owner, low_balance_enabled=False)
    run_alerts()
    AlertSettings.objects.filter(user=owner).update(low_balance_enabled=True)
    run_alerts()

    assert len(smtp.messages) == 2


def test_a_disabled_account_gets_no_email(smtp: Inbox, owner: User) -> None:
    set_balance(owner, 0)
    User.objects.filter(pk=owner.pk).update(is_active=False)

    run_alerts()

    assert smtp.messages == []


def test_an_unreachable_mail_server_fails_the_run_and_the_next_run_sends_it_once(
    smtp: Inbox, owner: User, settings
) -> None:
    set_balance(owner, 500_000)
    port = settings.EMAIL_PORT
    settings.EMAIL_PORT = free_port()  # nothing listens here

    with pytest.raises(CommandError, match=r"^cannot reach the mail server: \[Errno 111\] Connection refused$"):
        run_alerts()
    assert not AlertState.objects.exists()

    settings.EMAIL_PORT = port
    run_alerts()
    run_alerts()
    assert len(smtp.messages) == 1


def test_through_the_test_outbox_too(owner: User, settings) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.DOS_AI_SITE_URL = ""
    set_balance(owner, 0)

    alerts_send()
    alerts_send()

    (message,) = mail.outbox
    assert message.to == ["owner@example.com"]
    assert "To add credit, see Billing in your dashboard." in message.body
    assert "Change or turn off alerts in Settings." in message.body


# --- Weekly summary ------------------------------------------------------------------


def test_the_weekly_summary_is_opt_in_and_sent_once_per_week(owner: User, outsider: User, settings) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    AlertSettings.objects.create(user=owner, weekly_summary_enabled=True)
    api_key = key_for(owner, "Production backend")
    today = dt.datetime.now(dt.UTC).date()
    last_monday = today - dt.timedelta(days=today.weekday() + 7)
    days_ago = (today - last_monday).days
    add_usage(api_key, days_ago=days_ago, count=4)  # last week's Monday
    add_usage(api_key, days_ago=days_ago - 6, count=1, status_code=500, cost_micros=0)  # its Sunday
    add_usage(api_key, days_ago=days_ago + 1, count=50)  # the week before: not in it
    add_usage(key_for(outsider, "Theirs"), days_ago=days_ago, count=9)
    mail.outbox.clear()  # the "new API key" notices of the set-up

    first = alerts_send(today=today)
    again = alerts_send(today=today)

    assert (first.weekly_sent, again.weekly_sent) == (1, 0)
    (message,) = mail.outbox
    assert message.to == ["owner@example.com"]
    assert message.subject == f"DOS AI: your usage for the week of {last_monday:%b} {last_monday.day}"
    assert "  Requests: 5 (1 failed)\n  Tokens:   7,500\n  Cost:     $0.005000" in message.body
    assert f"  Production backend ({api_key.hint}): 5 requests, $0.005000" in message.body
    year, week, _ = last_monday.isocalendar()
    assert AlertState.objects.get(kind="weekly_summary").subject == f"{year}-W{week:02d}"
    # Next week, the next summary.
    assert alerts_send(today=today + dt.timedelta(days=7)).weekly_sent == 1


# --- The settings card -----------------------------------------------------------------


def test_the_settings_page_shows_the_alerts_with_their_defaults(owner: User, client_for) -> None:
    html = client_for(owner).get("/settings/").content.decode()

    assert '<section class="card" id="alerts"' in html
    assert '<form method="post" action="/settings/alerts/"' in html
    assert 'name="low_balance_enabled" id="alerts-low_balance_enabled" checked' in html
    assert 'name="low_balance_threshold_usd" value="1.00"' in html
    weekly_unchecked = (
        '<input type="checkbox" name="weekly_summary_enabled"'
        ' aria-describedby="alerts-weekly_summary_enabled_helptext" id="alerts-weekly_summary_enabled">'
    )
    assert weekly_unchecked in html
    assert not AlertSettings.objects.exists()  # reading writes nothing


def test_saving_the_alerts_goes_back_to_settings_with_a_message(owner: User, client_for) -> None:
    client = client_for(owner)

    response = client.post(
        "/settings/alerts/",
        {"low_balance_enabled": "on", "low_balance_threshold_usd": "$2.5", "weekly_summary_enabled": "on"},
    )

    assert response.status_code == 302
    assert response["Location"] == "/settings/#alerts"
    saved = AlertSettings.objects.get(user=owner)
    assert (saved.low_balance_enabled, saved.low_balance_threshold_micros, saved.weekly_summary_enabled) == (
        True,
        2_500_000,
        True,
    )
    html = client.get("/settings/").content.decode()
    assert "Alert settings saved." in html
    assert 'name="low_balance_threshold_usd" value="2.50"' in html


@pytest.mark.parametrize(
    ("threshold", "error"),
    [
        ("", "This field is required."),
        ("lots", "Enter the threshold in US dollars with at most 6 decimals, e.g. 10 or 2.50."),
        ("0", "Choose a threshold from $0.01 to $1,000,000."),
        ("-5", "Choose a threshold from $0.01 to $1,000,000."),
        ("1000000.01", "Choose a threshold from $0.01 to $1,000,000."),
        ("1e400", "Choose a threshold from $0.01 to $1,000,000."),
        ("NaN", "Enter the threshold in US dollars with at most 6 decimals, e.g. 10 or 2.50."),
    ],
)
def test_a_bad_threshold_is_refused_with_a_form_error(owner: User, client_for, threshold: str, error: str) -> None:
    response = client_for(owner).post("/settings/alerts/", {"low_balance_threshold_usd": threshold})

    assert response.status_code == 200
    assert error in response.content.decode()
    assert 'class="field has-error"' in response.content.decode()
    assert not AlertSettings.objects.exists()


def test_the_alerts_form_needs_login_and_csrf(owner: User, client_for) -> None:
    assert Client().post("/settings/alerts/", {"low_balance_threshold_usd": "5"}).status_code == 302
    response = client_for(owner, enforce_csrf_checks=True).post("/settings/alerts/", {"low_balance_threshold_usd": "5"})
    assert response.status_code == 403
    assert not AlertSettings.objects.exists()


def test_each_account_changes_only_its_own_alerts(owner: User, outsider: User, client_for) -> None:
    AlertSettings.objects.create(user=owner, low_balance_threshold_micros=7_000_000)

    client_for(outsider).post("/settings/alerts/", {"low_balance_threshold_usd": "3"})

    assert AlertSettings.objects.get(user=owner).low_balance_threshold_micros == 7_000_000
    assert AlertSettings.objects.get(user=outsider).low_balance_threshold_micros == 3_000_000


@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_send_the_alert_once(smtp: Inbox, owner: User) -> None:
    import asyncio
    import threading

    from django.db import connection

    set_balance(owner, 100_000)
    slow = smtp.handle_DATA

    async def slow_handle_data(server, session, envelope) -> str:
        await asyncio.sleep(0.5)  # the first run holds its transaction open while the second arrives
        return await slow(server, session, envelope)

    smtp.handle_DATA = slow_handle_data
    results = []

    def run() -> None:
        try:
            results.append(alerts_send().low_balance_sent)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [0, 1]
    assert len(smtp.messages) == 1
    assert AlertState.objects.filter(user=owner).count() == 1


def test_a_key_near_and_at_its_spend_limit_is_mailed_once_per_threshold_and_period(owner: User) -> None:
    from apikeys.services import KeySettings, api_key_create

    api_key, _raw = api_key_create(
        owner=owner, name="Batch", settings=KeySettings(spend_limit_micros=10_000, spend_period="day")
    )
    mail.outbox.clear()  # the new-key notice
    ApiKey.objects.filter(pk=api_key.pk).update(spend_spent_micros=7_999)
    below = alerts_send()
    ApiKey.objects.filter(pk=api_key.pk).update(spend_spent_micros=8_000)
    at_80, again_80 = alerts_send(), alerts_send()
    ApiKey.objects.filter(pk=api_key.pk).update(spend_spent_micros=10_000)
    at_100, again_100 = alerts_send(), alerts_send()

    assert [run.key_spend_sent for run in (below, at_80, again_80, at_100, again_100)] == [0, 1, 0, 1, 0]
    assert [message.subject for message in mail.outbox] == [
        "DOS AI: key “Batch” is at 80% of its spend limit",
        "DOS AI: key “Batch” reached its spend limit",
    ]
    assert "has spent $0.01 of its $0.01 limit this day (UTC)" in mail.outbox[1].body
    assert mail.outbox[1].to == [owner.email]


def test_key_spend_alerts_can_be_turned_off(owner: User) -> None:
    from apikeys.services import KeySettings, api_key_create

    api_key, _raw = api_key_create(
        owner=owner, name="Batch", settings=KeySettings(spend_limit_micros=10_000, spend_period="total")
    )
    AlertSettings.objects.update_or_create(user=owner, defaults={"key_spend_enabled": False})
    ApiKey.objects.filter(pk=api_key.pk).update(spend_spent_micros=10_000)
    mail.outbox.clear()

    assert alerts_send().key_spend_sent == 0
    assert mail.outbox == []
