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
from billing.settlement import Settlement


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


def spooled_settlement(owner: User, hold_id: int) -> Settlement:
    return Settlement(
        hold_id=hold_id, user_id=owner.pk, api_key_id=1, request_id=f"req_{hold_id}", client_request_id="",
        endpoint="chat/completions", model="dos-ai", input_price_micros_per_million=500_000,
        output_price_micros_per_million=1_500_000, prompt_tokens=11, completion_tokens=6, charge=True,
        status_code=200, streamed=False, latency_ms=5, started_at=timezone.now(),
    )  # fmt: skip


def test_settlements_waiting_in_the_spool_are_listed_and_a_refused_one_fails_the_command(
    owner: User, settings, tmp_path
) -> None:
    from dosportal.v1.settler import Spool

    settings.DOS_AI_SPOOL_DIR = str(tmp_path)
    kept, refused = (
        credit_reserve(user_id=owner.pk, amount_micros=2_500, request_id=f"req_spooled_{n}") for n in range(2)
    )
    spool = Spool(tmp_path)
    spool.keep(spooled_settlement(owner, kept))
    spool.keep(spooled_settlement(owner, refused))
    spool.refused(spooled_settlement(owner, refused), ValueError("a constraint"))
    out = io.StringIO()

    with pytest.raises(CommandError, match="refused a settlement"):
        call_command("balance", owner.email, stdout=out)

    assert f"Spooled:            $0.000030  (2 settlements waiting for the database: holds {kept}, {refused})" in (
        out.getvalue()
    )
    assert f"MISMATCH: the database refused the settlement of hold {refused}, which waits in the spool" in (
        out.getvalue()
    )
    spool.done(refused)  # written after all: nothing is left to report
    assert "Spooled:" in run_balance(owner.email) and "refused" not in run_balance(owner.email)
