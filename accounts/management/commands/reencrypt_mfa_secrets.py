"""`reencrypt_mfa_secrets`: every two-factor secret rewritten with the first encryption key."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError

from accounts.cli import OperatorCommand
from accounts.mfa_encryption import MFASecretUnreadable
from accounts.services import mfa_secrets_reencrypt


class Command(OperatorCommand):
    help = (
        "Re-encrypt every TOTP secret and recovery-code seed with the first key of DOS_AI_MFA_ENCRYPTION_KEYS. "
        "Run it after putting a new key first; then the old keys can be removed."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            count = mfa_secrets_reencrypt()
        except MFASecretUnreadable as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"Re-encrypted the secrets of {count} authenticator{'s' if count != 1 else ''}.")
