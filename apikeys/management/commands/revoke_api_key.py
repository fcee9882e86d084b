"""`manage.py revoke_api_key EMAIL NAME`: revoke a key at once; its next request gets 401.

NAME is the key's name as the dashboard shows it, or its hint (`dos_sk_AbCd…wXyZ`) when
several active keys share a name. Revoking a key that is already revoked changes nothing
and succeeds, so a script may run it twice.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError
from django.db.models import Q

from accounts.cli import AccountCommand, checked_text
from accounts.models import User
from apikeys.models import NAME_MAX_LENGTH, ApiKey
from apikeys.services import api_key_revoke


class Command(AccountCommand):
    help = "Revoke an account's API key by name (or hint): the next request with it gets 401."

    def add_account_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("name", help="the key's name, or its hint (dos_sk_AbCd…wXyZ) when names repeat")

    def handle_account(self, owner: User, *, name: str, **options: Any) -> None:
        name = checked_text(name, what="key name", max_length=NAME_MAX_LENGTH)
        keys = list(ApiKey.objects.filter(Q(name=name) | Q(hint=name), owner=owner).order_by("created_at", "id"))
        if not keys:
            raise CommandError(f"{owner.email} has no API key named {name!r}.")
        active = [key for key in keys if key.is_active]
        if not active:
            self.stdout.write(f"The key {keys[-1]} of {owner.email} was already revoked; nothing changed.")
            return
        if len(active) > 1:
            hints = ", ".join(key.hint for key in active)
            raise CommandError(
                f"{owner.email} has {len(active)} active keys named {name!r} ({hints}): "
                "give the hint of the one to revoke."
            )
        api_key_revoke(api_key=active[0])
        self.stdout.write(f"Revoked the key {active[0]} of {owner.email}. Requests with it now get 401.")
