"""`set_limits EMAIL --rpm N --tpm N` or `--clear`: an account's own limits, overriding its plan."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from accounts.cli import AccountCommand
from accounts.models import User
from accounts.services import account_set_limits


class Command(AccountCommand):
    help = (
        "Override an account's requests and tokens per minute (per API key); "
        "a limit not given keeps its current value. --clear returns to the plan's limits."
    )

    def add_account_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--rpm", type=int, help="Requests per minute per key.")
        parser.add_argument("--tpm", type=int, help="Tokens per minute per key.")
        parser.add_argument("--clear", action="store_true", help="Remove the override: the plan's limits apply.")

    def handle_account(self, user: User, *, rpm: int | None, tpm: int | None, clear: bool, **options: Any) -> None:
        if clear and (rpm is not None or tpm is not None):
            raise CommandError("Use either --clear or --rpm/--tpm, not both.")
        if not clear and rpm is None and tpm is None:
            raise CommandError("Give --rpm and/or --tpm, or --clear.")
        if clear:
            rpm_value = tpm_value = None
        else:
            # Setting one limit keeps the other's current override rather than silently dropping it.
            rpm_value = rpm if rpm is not None else user.requests_per_minute_override
            tpm_value = tpm if tpm is not None else user.tokens_per_minute_override
        try:
            user = account_set_limits(user=user, requests_per_minute=rpm_value, tokens_per_minute=tpm_value)
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
        source = "custom limits" if user.has_limit_override else f"the {user.plan_info.label} plan's limits"
        self.stdout.write(
            f"{user.email} now has {source}: {user.requests_per_minute:,} requests and "
            f"{user.tokens_per_minute:,} tokens per minute per key."
        )
