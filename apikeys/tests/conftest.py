"""Fixtures for the API key tests (make_key, superuser and admin_client are in the root conftest)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message

import pytest

from accounts.models import User
from apikeys.models import ApiKey

MadeKey = tuple[ApiKey, str]


@pytest.fixture
def owner_key(owner: User, make_key: Callable[..., MadeKey]) -> ApiKey:
    """The owner's key, as a row (the gateway's tests call a raw key `api_key`)."""
    return make_key(owner)[0]


@dataclass
class SmtpServer:
    """A real SMTP server on 127.0.0.1 (aiosmtpd) and the messages it received."""

    port: int
    received: list[Message] = field(default_factory=list)

    def django_settings(self) -> dict[str, object]:
        return {
            "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "EMAIL_HOST": "127.0.0.1",
            "EMAIL_PORT": self.port,
            "EMAIL_USE_TLS": False,
        }


@contextlib.contextmanager
def _serving_smtp() -> Iterator[SmtpServer]:
    from aiosmtpd.controller import Controller

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = SmtpServer(port)

    class Collector:
        async def handle_DATA(self, smtp: object, session: object, envelope: object) -> str:
            message = message_from_bytes(envelope.content)  # type: ignore[attr-defined]
            message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)  # type: ignore[attr-defined]
            server.received.append(message)
            return "250 OK"

    controller = Controller(Collector(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    with _serving_smtp() as server:
        yield server


@pytest.fixture(scope="module")
def module_smtp_server() -> Iterator[SmtpServer]:
    """One server for a module's tests, so a live gateway mailing to it is started once
    (gateway_factory starts one per distinct environment); tests clear `received` first."""
    with _serving_smtp() as server:
        yield server
