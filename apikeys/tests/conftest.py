"""Fixtures for the API key tests (make_key, superuser and admin_client are in the root conftest)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from accounts.models import User
from apikeys.models import ApiKey

MadeKey = tuple[ApiKey, str]


@pytest.fixture
def owner_key(owner: User, make_key: Callable[..., MadeKey]) -> ApiKey:
    """The owner's key, as a row (the gateway's tests call a raw key `api_key`)."""
    return make_key(owner)[0]
