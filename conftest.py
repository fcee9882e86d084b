"""Shared fixtures: an owner, an outsider, logged-in clients, and a clean Redis per test."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import Client

from accounts.models import User
from apikeys.models import ApiKey
from apikeys.services import api_key_create

pytest_plugins = [
    "dosportal.testing.browser",
    "dosportal.testing.upstream",
    "dosportal.testing.gateway",
    "dosportal.testing.faults",
    "dosportal.testing.hostile_upstream",
    "dosportal.testing.limiters",
    "dosportal.testing.exacting_upstream",
    "dosportal.testing.pgbouncer",
    "dosportal.testing.sentinel",
    "dosportal.testing.replica",
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
def superuser(db: None) -> User:
    """The one administrator of the tests (its sign-in is recorded by `admin_client`)."""
    return User.objects.create_superuser("admin@example.com", PASSWORD)


@pytest.fixture
def admin_client(client_for: Callable[..., Client], superuser: User) -> Client:
    """pytest-django's name, our administrator: signed in as a form sign-in would be."""
    return client_for(superuser)


@pytest.fixture
def make_key(db: None) -> Callable[..., tuple[ApiKey, str]]:
    """Create a key through the service: (the ApiKey, its raw key); optionally back-dated or used."""

    def make(
        owner: User,
        name: str = "Production backend",
        *,
        created_at: datetime | None = None,
        last_used_at: datetime | None = None,
    ) -> tuple[ApiKey, str]:
        api_key, raw_key = api_key_create(owner=owner, name=name)
        changes = {"created_at": created_at, "last_used_at": last_used_at}
        changes = {field: value for field, value in changes.items() if value is not None}
        if changes:
            ApiKey.objects.filter(pk=api_key.pk).update(**changes)
            api_key.refresh_from_db()
        return api_key, raw_key

    return make


@pytest.fixture
def client_for() -> Callable[[User], Client]:
    def make(user: User, **kwargs: object) -> Client:
        client = Client(**kwargs)
        client.force_login(user)
        record_sign_in(client, user)
        return client

    return make
