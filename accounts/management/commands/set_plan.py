"""`set_plan EMAIL free|plus|pro`: the next /v1 request is limited by the new plan."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from accounts.cli import AccountCommand
from accounts.models import User
from accounts.plans import PLANS
from accounts.services import account_set_plan


class Command(AccountCommand):
    help = "Change an account's plan (free, plus or pro)."

    def add_account_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("plan", choices=list(PLANS))

    def handle_account(self, user: User, *, plan: str, **options: Any) -> None:
        user = account_set_plan(user=user, plan=plan)
        self.stdout.write(
            f"{user.email} is now on the {user.plan_info.label} plan: "
            f"{user.requests_per_minute:,} requests and {user.tokens_per_minute:,} tokens per minute per key."
        )
        if user.has_limit_override:
            self.stdout.write(
                self.style.WARNING("Custom limits are set for this account and still apply (set_limits --clear).")
            )
