"""Billing's side of what accounts announces (accounts.signals)."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from accounts.models import User
from accounts.signals import account_verified
from billing.services import credit_account_open


@receiver(account_verified, dispatch_uid="billing-open-credit-account")
def on_account_verified(sender: Any, user: User, **kwargs: Any) -> None:
    """The starting credit, once: credit_account_open grants only when it opens the account."""
    credit_account_open(user=user)
