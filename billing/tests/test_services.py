"""credits_grant, credit_reserve and usage_settle keep their invariants, also under concurrency
on PostgreSQL: the balance never goes below zero, it always equals the ledger sum, every
settled request is charged exactly once, and a failed upstream call costs nothing."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connection
from django.db.models import Sum

from accounts.models import User
from apikeys.models import ApiKey
from billing.models import CreditAccount, CreditHold, LedgerEntry, UsageRecord
from billing.selectors import ledger_sum_micros
from billing.services import CreditError, credit_reserve, credits_grant, usage_settle
from billing.settlement import Settlement
from dosportal.testing.keys import key_for
from dosportal.testing.settlements import call_settlement


def account_of(user: User) -> CreditAccount:
    return CreditAccount.objects.get(user=user)


def assert_consistent(user: User) -> None:
    """Balance = ledger sum; each entry's balance_after is the running sum; nothing negative."""
    account = account_of(user)
    assert account.balance_micros == ledger_sum_micros(user=user)
    assert account.balance_micros >= 0
    assert account.held_micros == (
        CreditHold.objects.filter(user=user).aggregate(total=Sum("amount_micros"))["total"] or 0
    )
    running = 0
    for amount, balance_after in (
        LedgerEntry.objects.filter(user=user).order_by("id").values_list("amount_micros", "balance_after_micros")
    ):
        running += amount
        assert balance_after == running
        assert balance_after >= 0


def outcome(user: User, api_key: ApiKey, request_id: str, *, hold_id: int, cost: int, status: int = 200) -> Settlement:
    """A call of 100 + 50 tokens worth exactly `cost` micro-USD (its input priced to make it so)."""
    return call_settlement(
        hold_id=hold_id,
        user_id=user.pk,
        api_key_id=api_key.pk,
        request_id=request_id,
        input_price_micros_per_million=cost * 10_000,
        prompt_tokens=100 if status == 200 else 0,
        completion_tokens=50 if status == 200 else 0,
        status_code=status,
        latency_ms=42,
        started_at=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    )


# --- credits_grant ----------------------------------------------------------------


def test_every_new_account_starts_with_the_sign_up_credit_as_a_ledger_entry(owner: User) -> None:
    entry = LedgerEntry.objects.get(user=owner)
    assert (entry.kind, entry.amount_micros, entry.balance_after_micros, entry.note) == (
        "grant",
        5_000_000,
        5_000_000,
        "Sign-up credit",
    )
    assert_consistent(owner)


def test_a_grant_adds_to_the_balance_and_the_ledger_together(owner: User, outsider: User) -> None:
    entry = credits_grant(user=owner, amount_micros=1_234_567, kind="topup", note="Invoice 7", created_by=outsider)

    assert (entry.amount_micros, entry.balance_after_micros, entry.created_by) == (1_234_567, 6_234_567, outsider)
    assert account_of(owner).balance_micros == 6_234_567
    assert_consistent(owner)


def test_a_zero_grant_is_refused(owner: User) -> None:
    with pytest.raises(CreditError, match="must not be zero"):
        credits_grant(user=owner, amount_micros=0)


def test_an_adjustment_below_zero_is_refused_and_writes_nothing(owner: User) -> None:
    with pytest.raises(CreditError, match="below zero"):
        credits_grant(user=owner, amount_micros=-5_000_001, kind="adjustment")
    assert account_of(owner).balance_micros == 5_000_000
    assert LedgerEntry.objects.filter(user=owner).count() == 1


def test_an_adjustment_cannot_take_credit_held_by_a_request_in_flight(owner: User) -> None:
    credit_reserve(user_id=owner.pk, amount_micros=4_000_000, request_id="req_1")
    with pytest.raises(CreditError, match="held by requests in flight"):
        credits_grant(user=owner, amount_micros=-1_000_001, kind="adjustment")
    credits_grant(user=owner, amount_micros=-1_000_000, kind="adjustment")
    assert account_of(owner).balance_micros == 4_000_000
    assert_consistent(owner)


# --- credit_reserve and usage_settle ---------------------------------------------------


def test_a_reservation_holds_credit_and_fails_when_the_available_credit_is_short(owner: User) -> None:
    assert credit_reserve(user_id=owner.pk, amount_micros=3_000_000, request_id="req_1") is not None
    assert credit_reserve(user_id=owner.pk, amount_micros=2_000_001, request_id="req_2") is None
    assert credit_reserve(user_id=owner.pk, amount_micros=2_000_000, request_id="req_3") is not None

    account = account_of(owner)
    assert (account.balance_micros, account.held_micros, account.available_micros) == (5_000_000, 5_000_000, 0)
    assert_consistent(owner)


def test_settling_charges_the_actual_cost_and_releases_the_hold(owner: User) -> None:
    api_key = key_for(owner, "k")
    hold_id = credit_reserve(user_id=owner.pk, amount_micros=10_000, request_id="req_1")

    record = usage_settle(settlement=outcome(owner, api_key, "req_1", hold_id=hold_id, cost=1_468))

    assert (record.cost_micros, record.status_code, record.total_tokens) == (1_468, 200, 150)
    assert record.ledger_entry.amount_micros == -1_468
    assert record.ledger_entry.kind == "usage"
    account = account_of(owner)
    assert (account.balance_micros, account.held_micros) == (4_998_532, 0)
    assert_consistent(owner)


def test_a_request_is_settled_exactly_once(owner: User) -> None:
    api_key = key_for(owner, "k")
    hold_id = credit_reserve(user_id=owner.pk, amount_micros=10_000, request_id="req_1")

    assert usage_settle(settlement=outcome(owner, api_key, "req_1", hold_id=hold_id, cost=5_000)) is not None
    assert usage_settle(settlement=outcome(owner, api_key, "req_1", hold_id=hold_id, cost=5_000)) is None

    assert UsageRecord.objects.filter(user=owner).count() == 1
    assert account_of(owner).balance_micros == 4_995_000
    assert_consistent(owner)


def test_a_failed_upstream_call_is_recorded_but_not_charged(owner: User) -> None:
    api_key = key_for(owner, "k")
    hold_id = credit_reserve(user_id=owner.pk, amount_micros=10_000, request_id="req_1")

    record = usage_settle(settlement=outcome(owner, api_key, "req_1", hold_id=hold_id, cost=0, status=502))

    assert (record.cost_micros, record.status_code) == (0, 502)
    assert not LedgerEntry.objects.filter(usage=record).exists()
    account = account_of(owner)
    assert (account.balance_micros, account.held_micros) == (5_000_000, 0)
    assert_consistent(owner)


def test_a_charge_above_its_hold_stops_at_the_hold_and_never_takes_other_holds(owner: User) -> None:
    """The hold is the call's admitted worst case: a report above it is not charged beyond it."""
    api_key = key_for(owner, "k")
    other_hold = credit_reserve(user_id=owner.pk, amount_micros=1_000_000, request_id="req_other")
    hold_id = credit_reserve(user_id=owner.pk, amount_micros=1_000, request_id="req_1")

    record = usage_settle(settlement=outcome(owner, api_key, "req_1", hold_id=hold_id, cost=9_000_000))

    assert record.cost_micros == 1_000
    account = account_of(owner)
    assert (account.balance_micros, account.held_micros) == (4_999_000, 1_000_000)
    assert other_hold is not None
    assert_consistent(owner)


# --- Concurrency on PostgreSQL: many threads, each with its own connection ---------------------


# SQLite serialises writers with a file lock, so these only mean something on PostgreSQL.
on_postgresql = pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL (DATABASE_URL)")


def run_concurrently(count: int, task: Callable[[int], Any]) -> list[Any]:
    """Start `count` calls of `task(index)` at the same moment, one DB connection per thread."""
    barrier = threading.Barrier(count)

    def call(index: int) -> Any:
        try:
            barrier.wait(timeout=30)
            return task(index)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(call, range(count)))


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_reservations_against_credit_for_ten_admit_exactly_ten(owner: User) -> None:
    credits_grant(user=owner, amount_micros=-4_000_000, kind="adjustment")  # $1.00 left: 10 × $0.10
    api_key = key_for(owner, "k")

    holds = run_concurrently(
        50, lambda index: credit_reserve(user_id=owner.pk, amount_micros=100_000, request_id=f"req_{index}")
    )

    admitted = [(index, hold) for index, hold in enumerate(holds) if hold is not None]
    assert len(admitted) == 10
    account = account_of(owner)
    assert (account.balance_micros, account.held_micros) == (1_000_000, 1_000_000)

    # Settle them all at once, each for less than it held.
    records = run_concurrently(
        10,
        lambda position: usage_settle(
            settlement=outcome(
                owner, api_key, f"req_{admitted[position][0]}", hold_id=admitted[position][1], cost=60_000 + position
            ),
        ),
    )

    assert all(record is not None for record in records)
    account = account_of(owner)
    assert (account.balance_micros, account.held_micros) == (1_000_000 - 600_000 - 45, 0)
    assert LedgerEntry.objects.filter(user=owner, kind="usage").count() == 10
    assert_consistent(owner)


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_concurrent_settlements_of_one_request_charge_it_once(owner: User) -> None:
    api_key = key_for(owner, "k")
    hold_id = credit_reserve(user_id=owner.pk, amount_micros=50_000, request_id="req_1")

    results = run_concurrently(
        8, lambda _index: usage_settle(settlement=outcome(owner, api_key, "req_1", hold_id=hold_id, cost=30_000))
    )

    assert sum(result is not None for result in results) == 1
    assert UsageRecord.objects.filter(request_id="req_1").count() == 1
    assert account_of(owner).balance_micros == 4_970_000
    assert_consistent(owner)


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_concurrent_grants_and_adjustments_never_break_the_ledger(owner: User) -> None:
    def grant_or_take(index: int) -> bool:
        amount = 1_000_000 if index % 2 else -2_000_000
        try:
            credits_grant(user=owner, amount_micros=amount, kind="grant" if amount > 0 else "adjustment")
        except CreditError:
            return False
        return True

    outcomes = run_concurrently(40, grant_or_take)

    granted = sum(1 for index, done in enumerate(outcomes) if done and index % 2)
    taken = sum(1 for index, done in enumerate(outcomes) if done and not index % 2)
    assert granted == 20
    assert account_of(owner).balance_micros == 5_000_000 + granted * 1_000_000 - taken * 2_000_000
    assert LedgerEntry.objects.filter(user=owner).count() == 1 + granted + taken
    assert_consistent(owner)
