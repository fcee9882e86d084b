"""`balance` reports credit stuck in old holds: a settlement that has not reached the database, or a dead worker's."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from accounts.models import User
from billing.models import CreditHold
from billing.services import credit_reserve


def run_balance(email: str) -> str:
    out = io.StringIO()
    call_command("balance", email, stdout=out)
    return out.getvalue()


def test_a_fresh_hold_is_a_request_in_flight_not_a_problem(owner: User) -> None:
    credit_reserve(user_id=owner.pk, amount_micros=2_500, request_id="req_in_flight")

    out = run_balance(owner.email)

    assert "Held:               $0.002500  (requests in flight)" in out
    assert out.rstrip().endswith("OK: the balance equals the ledger sum.")


def test_a_hold_older_than_fifteen_minutes_is_reported_and_fails_the_command(owner: User) -> None:
    hold_id = credit_reserve(user_id=owner.pk, amount_micros=2_500, request_id="req_stuck")
    CreditHold.objects.filter(pk=hold_id).update(created_at=timezone.now() - dt.timedelta(minutes=16))
    out = io.StringIO()

    with pytest.raises(CommandError, match="stuck in old holds"):
        call_command("balance", owner.email, stdout=out)

    assert "MISMATCH: 1 hold older than 15 minutes" in out.getvalue()
