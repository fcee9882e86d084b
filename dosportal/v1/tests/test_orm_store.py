"""The ORM store (the embedded SQLite default's /v1 path), where it differs from PostgreSQL's."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from django.db import OperationalError

from billing.models import CreditHold
from dosportal.v1.store import Caller, OrmStore

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_failed_last_used_write_after_the_hold_keeps_the_reservation(owner, make_key, monkeypatch):
    """The hold is committed before the last-used write; SQLite's "database is locked" on the
    second must not make the call a 503 whose hold nobody settles."""
    api_key, _ = make_key(owner)

    def locked(**kwargs: object) -> None:
        raise OperationalError("database is locked")

    monkeypatch.setattr("apikeys.services.api_key_mark_used", locked)
    caller = Caller(api_key.pk, api_key.hint, owner.pk, 60, 100_000, None)

    hold_id = asyncio.run(
        OrmStore().reserve(caller, amount_micros=100, request_id="req_locked", started_at=dt.datetime.now(dt.UTC))
    )

    assert CreditHold.objects.get(pk=hold_id).request_id == "req_locked"
