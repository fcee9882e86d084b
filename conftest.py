"""Shared fixtures: an owner, an outsider, logged-in clients, and a clean Redis per test."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import Client

from accounts.models import User

pytest_plugins = [
    "dosportal.testing.browser",
    "dosportal.testing.upstream",
    "dosportal.testing.gateway",
    "dosportal.testing.faults",
    "dosportal.testing.hostile_upstream",
]

PASSWORD = "correct horse battery staple 42"


def pytest_configure(config: pytest.Config) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _clean_shared_state() -> None:
    """Each test starts with no counters: flush the test Redis database (or the local cache)."""
    if settings.REDIS_URL:
        import redis

        redis.Redis.from_url(settings.REDIS_URL).flushdb()
    cache.clear()


@pytest.fixture
def password() -> str:
    return PASSWORD


@pytest.fixture
def owner(db: None) -> User:
    return User.objects.create_user("owner@example.com", PASSWORD)


@pytest.fixture
def outsider(db: None) -> User:
    return User.objects.create_user("outsider@example.com", PASSWORD)


def record_sign_in(client: Client, user: User) -> None:
    """force_login skips the sign-in form; record in the session what the form would have
    (allauth's list of how this session authenticated, and when it was last seen), so steps
    that need a recent sign-in (creating a key) see one."""
    session = client.session
    session["account_authentication_methods"] = [{"method": "password", "at": time.time(), "email": user.email}]
    session["account_authentication_methods_user"] = str(user.pk)
    session["dos_session_seen_at"] = time.time()
    session.save()


@pytest.fixture
def client_for() -> Callable[[User], Client]:
    def make(user: User, **kwargs: object) -> Client:
        client = Client(**kwargs)
        client.force_login(user)
        record_sign_in(client, user)
        return client

    return make
