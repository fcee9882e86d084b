"""Accounts an operator makes are verified and credited at creation; self-made ones when they confirm
their email (accounts/tests/test_signup.py). Never twice."""

from __future__ import annotations

from decimal import Decimal

import pytest
from allauth.account.models import EmailAddress
from django.core.management import call_command

from accounts.models import User
from billing.models import CreditAccount, LedgerEntry

pytestmark = pytest.mark.django_db


def is_verified(email: str) -> bool:
    return EmailAddress.objects.filter(email=email, verified=True, primary=True).exists()


def grants_of(email: str) -> list[tuple[str, int, int, str]]:
    return list(
        LedgerEntry.objects.filter(user__email=email).values_list(
            "kind", "amount_micros", "balance_after_micros", "note"
        )
    )


def test_create_user_grants_the_starting_credit():
    User.objects.create_user("new@example.com", "x-password-123456")

    assert grants_of("new@example.com") == [("grant", 5_000_000, 5_000_000, "Sign-up credit")]
    assert is_verified("new@example.com")
    assert CreditAccount.objects.get(user__email="new@example.com").balance_micros == 5_000_000


def test_createsuperuser_grants_it_too(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "x-password-123456")

    call_command("createsuperuser", "--noinput", "--email", "root@example.com")

    assert grants_of("root@example.com") == [("grant", 5_000_000, 5_000_000, "Sign-up credit")]
    assert is_verified("root@example.com")


def test_an_account_added_in_the_admin_gets_it(admin_client):
    response = admin_client.post(
        "/admin/accounts/user/add/",
        {
            "email": "added@example.com",
            "password1": "x-password-123456",
            "password2": "x-password-123456",
            "usable_password": "true",
        },
    )

    assert response.status_code == 302
    assert grants_of("added@example.com") == [("grant", 5_000_000, 5_000_000, "Sign-up credit")]
    assert is_verified("added@example.com")


def test_the_amount_comes_from_the_setting(settings):
    settings.DOS_AI_SIGNUP_CREDIT_USD = Decimal("2.50")

    User.objects.create_user("half@example.com", "x-password-123456")

    assert grants_of("half@example.com") == [("grant", 2_500_000, 2_500_000, "Sign-up credit")]


def test_zero_starting_credit_opens_the_account_without_an_entry(settings):
    settings.DOS_AI_SIGNUP_CREDIT_USD = Decimal("0")

    User.objects.create_user("zero@example.com", "x-password-123456")

    assert grants_of("zero@example.com") == []
    assert CreditAccount.objects.get(user__email="zero@example.com").balance_micros == 0


def test_saving_an_existing_user_grants_nothing_more(owner):
    owner.plan = "pro"
    owner.save()

    assert LedgerEntry.objects.filter(user=owner).count() == 1
