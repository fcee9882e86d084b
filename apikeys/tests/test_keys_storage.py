"""The raw key exists in one response and nowhere else: not the database, the session,
the cookies, the cache or the logs."""

from __future__ import annotations

import logging
import re

import pytest
import redis
from django.conf import settings
from django.contrib.sessions.models import Session
from django.db import connection
from django.test import Client

from accounts.models import User
from apikeys.keys import hash_key
from apikeys.models import ApiKey

pytestmark = pytest.mark.django_db


def create_through_the_page(client: Client, **extra: str) -> str:
    response = client.post("/keys/create/", {"name": "Production backend"}, **extra)
    assert response.status_code == 200
    (raw_key,) = set(re.findall(r"dos_sk_[A-Za-z0-9]{32}", response.content.decode()))
    return raw_key


def every_stored_value() -> list[str]:
    """Every column of every row of every table in the database, as text."""
    values = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608 - names from introspection
            for row in cursor.fetchall():
                values.extend(str(value) for value in row)
    return values


@pytest.mark.parametrize("extra", [{}, {"HTTP_HX_REQUEST": "true"}], ids=["plain", "htmx"])
def test_no_column_of_any_row_in_the_database_contains_the_raw_key(
    client_for, owner: User, extra: dict[str, str]
) -> None:
    client = client_for(owner)
    raw_key = create_through_the_page(client, **extra)
    client.get("/keys/")
    random_part = raw_key[len("dos_sk_") : -6]

    values = every_stored_value()

    assert hash_key(raw_key) in values  # the scan does see the key's row
    assert not [value for value in values if raw_key in value]
    assert not [value for value in values if random_part in value]


def test_the_session_and_cookies_never_hold_the_raw_key(client_for, owner: User) -> None:
    client = client_for(owner)
    raw_key = create_through_the_page(client)
    client.get("/keys/")

    for session in Session.objects.all():
        assert raw_key not in repr(session.get_decoded())
    assert raw_key not in str(client.cookies)


def test_the_cache_never_holds_the_raw_key(client_for, owner: User) -> None:
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL (the tests' shared cache)")
    client = client_for(owner)
    raw_key = create_through_the_page(client)
    client.get("/keys/")

    store = redis.Redis.from_url(settings.REDIS_URL)
    for name in store.scan_iter():
        assert raw_key.encode() not in name
        if store.type(name) == b"string":
            assert raw_key.encode() not in store.get(name)


def test_the_logs_never_hold_the_raw_key(client_for, owner: User, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = client_for(owner)

    raw_key = create_through_the_page(client)
    client.get("/keys/")

    assert raw_key not in caplog.text
    assert ApiKey.objects.get().hashed_key == hash_key(raw_key)
