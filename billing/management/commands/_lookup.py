"""What every billing command needs: the account named on the command line."""

from __future__ import annotations

from django.core.management.base import CommandError

from accounts.models import User


def user_by_email(email: str) -> User:
    """Emails are stored lower-cased, so an operator may type them in any case."""
    user = User.objects.filter(email__iexact=email.strip()).first()
    if user is None:
        raise CommandError(f"No account with the email {email!r}.")
    return user
