"""With Redis down, sign-in, sign-up and password reset still work (unthrottled), and say so at ERROR.

The test starts its own throwaway redis-server on a free port (never the shared one),
points the cache at it, checks the throttle counts there, then stops it.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from django.core.cache import caches
from django.test import Client

from accounts.models import User

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed"),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def throwaway_redis(settings) -> Iterator[subprocess.Popen]:
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    settings.CACHES = {
        "default": {
            "BACKEND": "dosportal.cache.FailOpenRedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    settings.DOS_AI_LOGIN_RATE = "2/m"
    yield server
    if server.poll() is None:
        server.terminate()
        server.wait(timeout=10)
    caches["default"].close()


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    server.wait(timeout=10)
    caches["default"].close()  # drop pooled connections: the next operation must reconnect


def test_the_throttle_counts_in_the_throwaway_redis_while_it_is_up(client: Client, throwaway_redis) -> None:
    for _attempt in range(2):
        client.post("/login/", {"login": "x@example.com", "password": "wrong"}, REMOTE_ADDR="203.0.113.9")

    response = client.post("/login/", {"login": "x@example.com", "password": "wrong"}, REMOTE_ADDR="203.0.113.9")

    assert response.status_code == 429


def test_sign_in_works_and_logs_an_error_while_redis_is_down(
    client: Client, owner: User, password: str, throwaway_redis, caplog
) -> None:
    stop(throwaway_redis)

    with caplog.at_level(logging.ERROR, logger="dosportal.cache"):
        for _attempt in range(3):  # over the 2/m rate: nothing is counted, nothing refused
            wrong = client.post("/login/", {"login": owner.email, "password": "wrong"}, REMOTE_ADDR="203.0.113.9")
            assert wrong.status_code == 200
        response = client.post("/login/", {"login": owner.email, "password": password}, REMOTE_ADDR="203.0.113.9")

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert int(client.session["_auth_user_id"]) == owner.pk
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert errors
    assert all(record.getMessage().startswith("cache fail-open: Redis unavailable") for record in errors)


def test_sign_up_and_password_reset_work_while_redis_is_down(
    client: Client, owner: User, throwaway_redis, mailoutbox
) -> None:
    stop(throwaway_redis)

    signup = client.post("/signup/", {"email": "new@example.com", "password1": "violet-harbour-lantern-93"})
    reset = client.post("/accounts/password/reset/", {"email": owner.email})

    assert signup.status_code == 302
    assert signup["Location"] == "/accounts/confirm-email/"
    assert User.objects.filter(email="new@example.com").exists()
    assert reset.status_code == 302
    assert reset["Location"] == "/accounts/password/reset/done/"
    assert sorted(mail.to[0] for mail in mailoutbox) == ["new@example.com", "owner@example.com"]
