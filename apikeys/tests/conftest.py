"""Fixtures for the API key tests: keys made through the service, and an admin."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest

from accounts.models import User
from apikeys.models import ApiKey
from apikeys.services import api_key_create

MadeKey = tuple[ApiKey, str]


@pytest.fixture
def make_key(db: None) -> Callable[..., MadeKey]:
    """Create a key through the service; optionally back-date it or mark it used."""

    def make(
        owner: User,
        name: str = "Production backend",
        *,
        created_at: datetime | None = None,
        last_used_at: datetime | None = None,
    ) -> MadeKey:
        api_key, raw_key = api_key_create(owner=owner, name=name)
        changes = {"created_at": created_at, "last_used_at": last_used_at}
        changes = {field: value for field, value in changes.items() if value is not None}
        if changes:
            ApiKey.objects.filter(pk=api_key.pk).update(**changes)
            api_key.refresh_from_db()
        return api_key, raw_key

    return make


@pytest.fixture
def api_key(owner: User, make_key: Callable[..., MadeKey]) -> ApiKey:
    return make_key(owner)[0]


@pytest.fixture
def superuser(db: None, password: str) -> User:
    return User.objects.create_superuser("admin@example.com", password)
