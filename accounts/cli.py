"""What every operator command needs: the account named on the command line, arguments
checked against what the database can hold, and a one-line error instead of a traceback.

A `CommandError` is printed by Django as one line (`CommandError: ...`) with exit status 1;
argparse's own errors (a missing argument, `--rpm abc`) print the usage and exit with 2.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from accounts.models import User

# The largest value of PostgreSQL's `integer` (Django's PositiveIntegerField).
MAX_INT32 = 2**31 - 1
EMAIL_MAX_LENGTH = 254


class OperatorCommand(BaseCommand):
    """A command that never ends in a traceback for a database refusal or outage: the
    first line of the database's message is the command's error."""

    def execute(self, *args: Any, **options: Any) -> str | None:
        try:
            return super().execute(*args, **options)
        except DatabaseError as error:
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise CommandError(f"The database refused the change: {first_line}") from None


class AccountCommand(OperatorCommand):
    """An operator command about one account, named by its email as the first argument (in any
    case). The account is found before anything else is done: a subclass declares its other
    arguments in `add_account_arguments` and does its work in `handle_account`."""

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("email", help="the account's email address")
        self.add_account_arguments(parser)

    def add_account_arguments(self, parser: ArgumentParser) -> None:
        """The command's arguments after the email."""

    def handle(self, *args: Any, email: str, **options: Any) -> None:
        self.handle_account(user_by_email(email), **options)

    def handle_account(self, user: User, **options: Any) -> None:
        raise NotImplementedError("an AccountCommand implements handle_account()")


def checked_text(value: str, *, what: str, max_length: int | None = None) -> str:
    """Trimmed text with no control characters (PostgreSQL refuses NUL), within max_length."""
    value = value.strip()
    if any(ord(character) < 32 or ord(character) == 127 for character in value):
        raise CommandError(f"The {what} must not contain control characters.")
    if max_length is not None and len(value) > max_length:
        raise CommandError(f"The {what} is too long: at most {max_length:,} characters.")
    return value


def checked_int(value: int | None, *, what: str, minimum: int, maximum: int) -> int | None:
    if value is not None and not minimum <= value <= maximum:
        raise CommandError(f"The {what} must be between {minimum:,} and {maximum:,}; got {value:,}.")
    return value


def user_by_email(email: str) -> User:
    """Emails are stored lower-cased, so an operator may type them in any case."""
    cleaned = checked_text(email, what="email", max_length=EMAIL_MAX_LENGTH)
    user = User.objects.get_by_email(cleaned)
    if user is None:
        raise CommandError(f"No account with the email {email!r}.")
    return user
