"""`grant_credits EMAIL AMOUNT_USD [--note TEXT]`: add credit, or (negative) adjust it down."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError

from accounts.cli import AccountCommand, checked_text
from accounts.models import SecurityEvent, User
from accounts.security import security_event_record
from billing.models import LedgerEntry
from billing.money import MICROS_PER_USD, InvalidAmount, format_usd, usd_to_micros
from billing.services import CreditError, credits_grant

# A typo guard well inside what the balance column holds (about 9.2 trillion USD).
MAX_AMOUNT_MICROS = 1_000_000_000 * MICROS_PER_USD
NOTE_MAX_LENGTH = 255  # LedgerEntry.note


class Command(AccountCommand):
    help = (
        "Add credit to an account as a ledger entry and print the new balance. "
        "A negative amount is an adjustment; it is refused if it would take the balance below zero."
    )

    def add_account_arguments(self, parser: ArgumentParser) -> None:
        # A string, not a float: the amount is converted exactly (at most 6 decimals).
        parser.add_argument("amount_usd", metavar="AMOUNT_USD", help="e.g. 25, 10.50 or -2.25")
        parser.add_argument("--note", default="", help="Shown to the user in their ledger.")

    def handle_account(self, user: User, *, amount_usd: str, note: str, **options: Any) -> None:
        note = checked_text(note, what="note", max_length=NOTE_MAX_LENGTH)
        try:
            amount_micros = usd_to_micros(amount_usd)
        except InvalidAmount as error:
            raise CommandError(f"Invalid amount: {error}.") from None
        if abs(amount_micros) > MAX_AMOUNT_MICROS:
            raise CommandError(f"Invalid amount: at most {format_usd(MAX_AMOUNT_MICROS)} either way at a time.")
        kind = LedgerEntry.Kind.GRANT if amount_micros > 0 else LedgerEntry.Kind.ADJUSTMENT
        default_note = "Credit granted by an administrator" if amount_micros > 0 else "Adjustment by an administrator"
        try:
            entry = credits_grant(user=user, amount_micros=amount_micros, kind=kind, note=note or default_note)
        except CreditError as error:
            raise CommandError(str(error)) from None
        security_event_record(
            user=user,
            kind=SecurityEvent.Kind.CREDIT_GRANTED,
            detail=f"{entry.get_kind_display()} {format_usd(entry.amount_micros)}",
        )
        amount = format_usd(amount_micros, 6)
        if amount_micros > 0:
            self.stdout.write(f"Granted {amount} to {user.email} (ledger entry {entry.pk}).")
        else:
            self.stdout.write(f"Adjusted {user.email} by {amount} (ledger entry {entry.pk}).")
        self.stdout.write(f"New balance: {format_usd(entry.balance_after_micros, 6)}")
