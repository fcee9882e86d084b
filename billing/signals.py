"""Every new account gets its starting credit, however it is created.

A receiver rather than a call in the sign-up view because accounts are also
created by the admin's add-user form, `createsuperuser` and `create_user`, and
each must get the same ledger entry. The receiver only calls the service.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models.signals import post_save
from django.dispatch import receiver

from billing.services import credit_account_open


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="billing-open-credit-account")
def open_credit_account(sender: type, instance: Any, created: bool, raw: bool = False, **kwargs: Any) -> None:
    if created and not raw:
        credit_account_open(user=instance)
