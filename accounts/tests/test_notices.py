"""Email notices: a new key, a sign-in from a new browser, a password change — through Django's test
outbox, and once through a real SMTP server on 127.0.0.1 (aiosmtpd, started by the test)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from email import message_from_bytes

import pytest
from django.test import Client

from accounts.models import User

pytestmark = pytest.mark.django_db


def test_a_new_key_is_mailed_to_its_owner_without_the_key(client_for, owner: User, mailoutbox) -> None:
    response = client_for(owner).post("/keys/create/", {"name": "Prod"}, REMOTE_ADDR="203.0.113.9")
    raw_key = response.context["raw_key"]

    assert [mail.subject for mail in mailoutbox] == ["DOS AI: A new API key was created"]
    body = mailoutbox[0].body
    assert mailoutbox[0].to == [owner.email]
    assert '"Prod"' in body
    assert "203.0.113.9" in body
    assert "If it was not you" in body
    assert raw_key not in body


def test_a_sign_in_from_a_new_browser_is_mailed_but_a_known_one_is_not(owner: User, password: str, mailoutbox) -> None:
    form = {"login": owner.email, "password": password}
    Client(HTTP_USER_AGENT="Firefox/140").post("/login/", form)  # the first sign-in ever: no notice
    Client(HTTP_USER_AGENT="Firefox/140").post("/login/", form)  # the same browser: no notice
    assert mailoutbox == []

    Client(HTTP_USER_AGENT="Strange/1.0").post("/login/", form, REMOTE_ADDR="198.51.100.4")

    assert [mail.subject for mail in mailoutbox] == ["DOS AI: New sign-in to your account"]
    assert "Strange/1.0" in mailoutbox[0].body
    assert "198.51.100.4" in mailoutbox[0].body
    assert "reset your password" in mailoutbox[0].body


def test_a_password_change_is_mailed(client_for, owner: User, password: str, mailoutbox) -> None:
    new = "marble-orchard-compass-71"
    response = client_for(owner).post(
        "/settings/", {"old_password": password, "new_password1": new, "new_password2": new}
    )

    assert response.status_code == 302
    assert [mail.subject for mail in mailoutbox] == ["DOS AI: Password Changed"]
    assert "If this was not you" in mailoutbox[0].body


@pytest.fixture
def smtp_server() -> Iterator[list]:
    from aiosmtpd.controller import Controller

    received: list = []

    class Collector:
        async def handle_DATA(self, server, session, envelope):
            received.append(envelope)
            return "250 OK"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Collector(), hostname="127.0.0.1", port=port)
    controller.start()
    received.append(port)
    yield received
    controller.stop()


def test_notices_go_out_through_a_real_smtp_server(client_for, owner: User, smtp_server, settings) -> None:
    port = smtp_server.pop(0)
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_USE_TLS = "127.0.0.1", port, False

    client_for(owner).post("/keys/create/", {"name": "Prod"})

    assert len(smtp_server) == 1
    envelope = smtp_server[0]
    assert envelope.rcpt_tos == [owner.email]
    message = message_from_bytes(envelope.content)
    assert message["Subject"] == "DOS AI: A new API key was created"
    assert '"Prod"' in message.get_payload(decode=True).decode()


def test_a_dead_mail_server_does_not_undo_the_key(client_for, owner: User, settings) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_USE_TLS = "127.0.0.1", port, False

    response = client_for(owner).post("/keys/create/", {"name": "Prod"})

    assert response.status_code == 200
    assert owner.api_keys.count() == 1
