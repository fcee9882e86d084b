"""`update_api_key EMAIL NAME [...]`: change an API key's name and settings from the shell.

Each setting has its form and its "none" form (`--spend-limit`/`--no-spend-limit`, ...); what
is not mentioned keeps its value. Prints the key's settings afterwards.
"""

from __future__ import annotations

import datetime as dt
from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.utils import timezone

from accounts.cli import AccountCommand
from accounts.models import User
from apikeys.forms import clean_key_name
from apikeys.limits import PERIODS
from apikeys.management.commands._keyargs import (
    active_key,
    comma_list,
    iso_datetime,
    non_negative_float,
    positive_int,
    usd,
)
from apikeys.services import UNSET, api_key_update, describe_key_settings
from billing.money import InvalidAmount, usd_to_micros

# Settings with an option that sets them and one that clears them: the field, the two options
# (by their dest), and the error for an empty list where a list is given.
SET_OR_CLEAR = (
    (
        "allowed_models",
        "models",
        "all_models",
        "--models needs at least one model name; use --all-models for every model.",
    ),
    ("max_concurrency", "max_concurrency", "no_max_concurrency", None),
    ("allowed_ips", "allow_ips", "any_ip", "--allow-ips needs at least one address or range; use --any-ip for any."),
)


class Command(AccountCommand):
    help = "Change an API key's name, expiry, spend limit, models, concurrency cap or allowed addresses."

    def add_account_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("name", help="the key's current name")
        expiry = parser.add_mutually_exclusive_group()
        expiry.add_argument("--expires-at", type=iso_datetime, help="ISO 8601 time (UTC unless it says otherwise)")
        expiry.add_argument("--expires-in", type=non_negative_float, metavar="DAYS", help="expire in this many days")
        expiry.add_argument("--no-expiry", action="store_true", help="never expire")
        spend = parser.add_mutually_exclusive_group()
        spend.add_argument("--spend-limit", type=usd, metavar="USD", help="spend limit per --spend-period")
        spend.add_argument("--no-spend-limit", action="store_true")
        parser.add_argument("--spend-period", choices=PERIODS, help="day, week, month (UTC) or total")
        models = parser.add_mutually_exclusive_group()
        models.add_argument("--models", type=comma_list, metavar="A,B", help="only these served models")
        models.add_argument("--all-models", action="store_true")
        concurrency = parser.add_mutually_exclusive_group()
        concurrency.add_argument("--max-concurrency", type=positive_int, metavar="N", help="requests in flight")
        concurrency.add_argument("--no-max-concurrency", action="store_true")
        ips = parser.add_mutually_exclusive_group()
        ips.add_argument("--allow-ips", type=comma_list, metavar="CIDR,...", help="only these addresses/ranges")
        ips.add_argument("--any-ip", action="store_true")
        parser.add_argument("--rename", metavar="NEW", help="a new name (unique among the account's active keys)")

    def handle_account(self, owner: User, *, name: str, **options: Any) -> None:
        changes: dict[str, Any] = {}
        if options["expires_at"] is not None:
            changes["expires_at"] = options["expires_at"]
        elif options["expires_in"] is not None:
            try:
                changes["expires_at"] = timezone.now() + dt.timedelta(days=options["expires_in"])
            except OverflowError:
                raise CommandError("--expires-in: too many days.") from None
        elif options["no_expiry"]:
            changes["expires_at"] = None
        if options["spend_limit"] is not None:
            if options["spend_period"] is None:
                raise CommandError("--spend-limit needs --spend-period day|week|month|total.")
            try:
                changes["spend_limit_micros"] = usd_to_micros(options["spend_limit"])
            except InvalidAmount:
                raise CommandError("--spend-limit: use at most 6 decimal places (one micro-dollar).") from None
            changes["spend_period"] = options["spend_period"]
        elif options["spend_period"] is not None:
            raise CommandError("--spend-period goes with --spend-limit USD.")
        elif options["no_spend_limit"]:
            changes["spend_limit_micros"] = None
        for field, option, clear_option, empty_error in SET_OR_CLEAR:
            if options[option] is not None:
                if empty_error and not options[option]:
                    raise CommandError(empty_error)
                changes[field] = options[option]
            elif options[clear_option]:
                changes[field] = None
        if options["rename"] is not None:
            changes["name"] = options["rename"]
        if not changes:
            raise CommandError("Nothing to change: give at least one setting (see --help).")
        api_key = active_key(owner, name)
        try:
            if "name" in changes:
                changes["name"] = clean_key_name(changes["name"])
            api_key = api_key_update(api_key=api_key, **{field: changes.get(field, UNSET) for field in changes})
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
        self.stdout.write(f"Updated key {api_key.name!r} ({api_key.hint}) of {api_key.owner.email}:")
        for line in describe_key_settings(api_key):
            self.stdout.write(f"  {line}")
