"""`roll_api_key EMAIL NAME [--grace-hours H]`: a new secret for the key, printed once.

Only the new key goes to stdout (so `KEY=$(manage.py roll_api_key ...)` works); the note
about the old secret's grace period goes to stderr.
"""

from __future__ import annotations

import datetime as dt
from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from accounts.cli import AccountCommand
from accounts.models import User
from apikeys.management.commands._keyargs import active_key, non_negative_float
from apikeys.services import api_key_roll


class Command(AccountCommand):
    help = "Give an API key a new secret (same key, settings and usage) and print it, shown this once."

    def add_account_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("name", help="the key's name")
        parser.add_argument(
            "--grace-hours",
            type=non_negative_float,
            default=0.0,
            metavar="H",
            help="how long the old secret keeps working (default 0: it stops at once)",
        )

    def handle_account(self, owner: User, *, name: str, grace_hours: float, **options: Any) -> None:
        api_key = active_key(owner, name)
        try:
            grace = dt.timedelta(hours=grace_hours)
            api_key, raw_key = api_key_roll(api_key=api_key, grace=grace)
        except OverflowError:
            raise CommandError("--grace-hours: too many hours.") from None
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
        self.stdout.write(raw_key)
        if api_key.previous_key_expires_at:
            until = api_key.previous_key_expires_at.strftime("%Y-%m-%d %H:%M:%S UTC")
            note = f"the old secret keeps working until {until}"
        else:
            note = "the old secret stopped working"
        self.stderr.write(f"Rolled key {api_key.name!r} ({api_key.hint}) of {api_key.owner.email}: {note}.")
