"""The operator commands: grant_credits, balance, set_plan, set_limits."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from accounts.models import User
from billing.models import CreditAccount, CreditHold, LedgerEntry
from billing.services import credit_reserve


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def balance_of(user: User) -> int:
    return CreditAccount.objects.get(user=user).balance_micros


# --- grant_credits ---------------------------------------------------------------


def test_grant_credits_adds_a_ledger_entry_and_prints_the_new_balance(owner: User) -> None:
    out = run("grant_credits", "owner@example.com", "12.50", "--note", "Invoice 2026-0142")

    entry = LedgerEntry.objects.filter(user=owner).first()
    assert (entry.kind, entry.amount_micros, entry.balance_after_micros, entry.note) == (
        "grant",
        12_500_000,
        17_500_000,
        "Invoice 2026-0142",
    )
    assert out == (f"Granted $12.500000 to owner@example.com (ledger entry {entry.pk}).\nNew balance: $17.500000\n")
    assert balance_of(owner) == 17_500_000


def test_grant_credits_parses_the_amount_exactly(owner: User) -> None:
    run("grant_credits", "owner@example.com", "0.000001")
    run("grant_credits", "owner@example.com", "0.1")
    run("grant_credits", "owner@example.com", "0.2")
    # 0.1 + 0.2 as floats is 0.30000000000000004; as micro-dollars it is exactly 300,001 + 5,000,000.
    assert balance_of(owner) == 5_300_001


def test_grant_credits_finds_the_account_whatever_the_case_of_the_email(owner: User) -> None:
    run("grant_credits", "Owner@Example.COM", "1")
    assert balance_of(owner) == 6_000_000


def test_a_negative_amount_is_an_adjustment(owner: User) -> None:
    out = run("grant_credits", "owner@example.com", "-2.25", "--note", "Duplicate grant")

    entry = LedgerEntry.objects.filter(user=owner).first()
    assert (entry.kind, entry.amount_micros, entry.note) == ("adjustment", -2_250_000, "Duplicate grant")
    assert out.endswith("New balance: $2.750000\n")
    assert out == f"Adjusted owner@example.com by -$2.250000 (ledger entry {entry.pk}).\nNew balance: $2.750000\n"


def test_an_adjustment_below_zero_is_refused_and_changes_nothing(owner: User) -> None:
    with pytest.raises(CommandError, match="below zero"):
        run("grant_credits", "owner@example.com", "-5.000001")
    assert balance_of(owner) == 5_000_000
    assert LedgerEntry.objects.filter(user=owner).count() == 1


def test_an_adjustment_to_exactly_zero_is_allowed(owner: User) -> None:
    out = run("grant_credits", "owner@example.com", "-5")
    assert out.endswith("New balance: $0.000000\n")


def test_an_adjustment_may_not_take_credit_held_by_requests_in_flight(owner: User) -> None:
    credit_reserve(user_id=owner.pk, amount_micros=1_000_000, request_id="req_in_flight")
    with pytest.raises(CommandError, match="held by requests in flight"):
        run("grant_credits", "owner@example.com", "-4.5")
    assert balance_of(owner) == 5_000_000


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("abc", "Invalid amount: not an amount"),
        ("1.0000001", "Invalid amount: 1.0000001 has more than 6 decimal places"),
        ("NaN", "Invalid amount"),
        ("0", "must not be zero"),
    ],
)
def test_grant_credits_refuses_a_bad_amount(owner: User, amount: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run("grant_credits", "owner@example.com", amount)
    assert LedgerEntry.objects.filter(user=owner).count() == 1


def test_grant_credits_refuses_an_unknown_email(db: None) -> None:
    with pytest.raises(CommandError, match=re.escape("No account with the email 'nobody@example.com'")):
        run("grant_credits", "nobody@example.com", "1")


# --- balance --------------------------------------------------------------------


def test_balance_prints_balance_held_and_ledger_sum_and_that_they_agree(owner: User) -> None:
    run("grant_credits", "owner@example.com", "1.234567")
    credit_reserve(user_id=owner.pk, amount_micros=30_000, request_id="req_in_flight")

    out = run("balance", "owner@example.com")

    assert out.splitlines() == [
        "Account:     owner@example.com",
        "Balance:            $6.234567",
        "Held:               $0.030000  (requests in flight)",
        "Available:          $6.204567",
        "Ledger sum:         $6.234567",
        "OK: the balance equals the ledger sum.",
    ]


def test_balance_reports_a_ledger_mismatch_and_fails(owner: User) -> None:
    CreditAccount.objects.filter(user=owner).update(balance_micros=5_000_100)
    out = StringIO()

    with pytest.raises(CommandError, match="does not agree"):
        call_command("balance", "owner@example.com", stdout=out)

    assert "Ledger sum:         $5.000000" in out.getvalue()
    assert "MISMATCH: the balance differs from the ledger sum by $0.000100." in out.getvalue()


def test_balance_reports_held_credit_without_a_hold(owner: User) -> None:
    CreditAccount.objects.filter(user=owner).update(held_micros=7)
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("balance", "owner@example.com", stdout=out)
    assert "the held credit differs from the open holds ($0.000000) by $0.000007" in out.getvalue()


def test_balance_of_an_account_without_credit_account_is_zero(owner: User) -> None:
    LedgerEntry.objects.filter(user=owner).delete()
    CreditAccount.objects.filter(user=owner).delete()
    CreditHold.objects.filter(user=owner).delete()

    out = run("balance", "owner@example.com")

    assert "(no credit account opened yet)" in out
    assert "Balance:            $0.000000" in out
    assert "OK: the balance equals the ledger sum." in out


# --- set_plan -------------------------------------------------------------------


def test_set_plan_changes_the_plan_and_prints_its_limits(owner: User) -> None:
    out = run("set_plan", "owner@example.com", "pro")

    owner.refresh_from_db()
    assert owner.plan == "pro"
    assert out == "owner@example.com is now on the Pro plan: 300 requests and 2,000,000 tokens per minute per key.\n"


def test_set_plan_warns_when_custom_limits_still_apply(owner: User) -> None:
    run("set_limits", "owner@example.com", "--rpm", "999")
    out = run("set_plan", "owner@example.com", "plus")
    assert "999 requests and 500,000 tokens per minute" in out
    assert "Custom limits are set for this account and still apply" in out


def test_set_plan_refuses_an_unknown_plan(owner: User) -> None:
    with pytest.raises(CommandError, match="invalid choice: 'gold'"):
        run("set_plan", "owner@example.com", "gold")
    owner.refresh_from_db()
    assert owner.plan == "free"


# --- set_limits -----------------------------------------------------------------


def test_set_limits_overrides_the_plan(owner: User) -> None:
    out = run("set_limits", "owner@example.com", "--rpm", "1000", "--tpm", "5000000")

    owner.refresh_from_db()
    assert (owner.requests_per_minute, owner.tokens_per_minute, owner.has_limit_override) == (1000, 5_000_000, True)
    assert out == ("owner@example.com now has custom limits: 1,000 requests and 5,000,000 tokens per minute per key.\n")


def test_set_limits_with_one_limit_keeps_the_other_override(owner: User) -> None:
    run("set_limits", "owner@example.com", "--rpm", "1000", "--tpm", "5000000")
    run("set_limits", "owner@example.com", "--rpm", "10")

    owner.refresh_from_db()
    assert (owner.requests_per_minute_override, owner.tokens_per_minute_override) == (10, 5_000_000)


def test_set_limits_clear_returns_to_the_plan(owner: User) -> None:
    run("set_plan", "owner@example.com", "plus")
    run("set_limits", "owner@example.com", "--rpm", "1000", "--tpm", "5000000")

    out = run("set_limits", "owner@example.com", "--clear")

    owner.refresh_from_db()
    assert (owner.requests_per_minute_override, owner.tokens_per_minute_override) == (None, None)
    assert out == (
        "owner@example.com now has the Plus plan's limits: 120 requests and 500,000 tokens per minute per key.\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "Give --rpm and/or --tpm, or --clear."),
        (("--clear", "--rpm", "5"), "Use either --clear or --rpm/--tpm, not both."),
        (("--rpm", "0"), "The requests per minute limit must be at least 1."),
        (("--tpm", "-3"), "The tokens per minute limit must be at least 1."),
    ],
)
def test_set_limits_refuses_bad_arguments(owner: User, args: tuple[str, ...], message: str) -> None:
    with pytest.raises(CommandError, match=message.replace(".", r"\.").replace("(", r"\(")):
        run("set_limits", "owner@example.com", *args)
    owner.refresh_from_db()
    assert owner.has_limit_override is False


# --- Through manage.py, as an operator or a script runs them ---------------------------------


def manage(*args: str) -> subprocess.CompletedProcess[str]:
    database = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the child process needs the PostgreSQL test database")
@pytest.mark.django_db(transaction=True)
def test_from_the_shell_exit_codes_tell_success_from_refusal(owner: User) -> None:
    granted = manage("grant_credits", "owner@example.com", "-1.5", "--note", "Correction")
    assert granted.returncode == 0, granted.stderr
    assert granted.stdout.endswith("New balance: $3.500000\n")

    refused = manage("grant_credits", "owner@example.com", "-10")
    assert refused.returncode == 1
    assert "CommandError: This adjustment would take the balance below zero." in refused.stderr

    agreed = manage("balance", "owner@example.com")
    assert agreed.returncode == 0
    assert agreed.stdout.splitlines()[-1] == "OK: the balance equals the ledger sum."

    CreditAccount.objects.filter(user=owner).update(balance_micros=1)
    mismatch = manage("balance", "owner@example.com")
    assert mismatch.returncode == 1
    assert "MISMATCH" in mismatch.stdout
