"""`manage.py create_api_key EMAIL --name NAME`: print a new raw key once, for automation.

Only the key goes to stdout (so `KEY=$(manage.py create_api_key ...)` works); the
note about it goes to stderr.
"""

from __future__ import annotations

from argparse import ArgumentParser

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from accounts.cli import AccountCommand, checked_text
from accounts.models import User
from apikeys.forms import clean_key_name
from apikeys.services import api_key_create


class Command(AccountCommand):
    help = "Create an API key for an account and print the raw key, which is shown this once."

    def add_account_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--name", required=True, help="the key's name, e.g. 'Production backend'")

    def handle_account(self, owner: User, *, name: str, **options: object) -> None:
        name = checked_text(name, what="key name")
        if not owner.is_active:
            # Its keys would never authenticate (the gateway checks the owner is active).
            raise CommandError(f"The account {owner.email} is disabled.")
        try:
            api_key, raw_key = api_key_create(owner=owner, name=clean_key_name(name))
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
        self.stdout.write(raw_key)
        self.stderr.write(
            f"Created key {api_key.name!r} ({api_key.hint}) for {owner.email}. It will not be shown again."
        )
