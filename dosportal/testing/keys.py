"""A key row for tests that need one but never its raw key (usage history, pages, exports)."""

from __future__ import annotations

from accounts.models import User
from apikeys.models import ApiKey
from apikeys.services import api_key_create


def key_for(owner: User, name: str) -> ApiKey:
    """A new key of `owner`, made through the service (the raw key is dropped)."""
    return api_key_create(owner=owner, name=name)[0]
